"""Target speaker extraction deployment: a thin Ray Serve adapter around ``TargetExtractor``.

One replica holds one ``models.pipelines.tse.TargetExtractor`` (TF-GridNet + USEF
cross-attention, arXiv 2409.02615). ``extract(mix, ref)`` runs off the event loop
(``asyncio.to_thread``) so the replica keeps answering health checks during a long file. The
reference is encoded once per request and reused for every chunk of the mixture (that is what
the pipeline does), so requests are not batched together: two requests share neither a
reference nor a length. Errors a caller causes come back as ``str`` messages, never exceptions
across the handle, and the ingress (``serve/routes/tse.py``) turns them into 400.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import torch
from ray import serve

from models.pipelines.placement import serving_device
from models.pipelines.tse import TargetExtractor
from serve.deployments import HEALTH, Product, ReplicaHealth

log = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8, **HEALTH)
class TSEModel(ReplicaHealth):
    """``extract(mix, ref)``: both ``(T,)`` float32 at the model's rate -> target ``(T,)``."""

    def __init__(
        self,
        checkpoint: str,
        *,
        torch_threads: int = 1,
        batch_size: int = 4,
        chunk_seconds: float = 4.0,
        overlap_seconds: float = 1.0,
        num_gpus: float = 0.0,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.device = serving_device(num_gpus)
        self.extractor = TargetExtractor.from_checkpoint(
            checkpoint, batch_size=batch_size, device=self.device
        )
        self.chunk_seconds = chunk_seconds
        self.overlap_seconds = overlap_seconds

    def info(self) -> dict[str, Any]:
        return {
            "sample_rate": self.extractor.sample_rate,
            "chunk_seconds": self.chunk_seconds,
            "overlap_seconds": self.overlap_seconds,
        }

    def _extract(self, mix: np.ndarray, ref: np.ndarray) -> dict[str, Any] | str:
        sr = self.extractor.sample_rate
        t0 = time.perf_counter()
        with self.watch():
            try:
                out = self.extractor(
                    mix,
                    sr,
                    ref,
                    sr,
                    chunk_seconds=self.chunk_seconds,
                    overlap_seconds=self.overlap_seconds,
                )
            except ValueError as exc:  # AudioError and the chunking checks
                return str(exc)
        return {"audio": out, "sample_rate": sr, "model_seconds": time.perf_counter() - t0}

    async def extract(self, mix: np.ndarray, ref: np.ndarray) -> dict[str, Any] | str:
        """``{audio: (T,) float32, sample_rate, model_seconds}`` or an error message."""
        return await asyncio.to_thread(self._extract, mix, ref)


PRODUCT = Product(key="tse", arg="tse", deployment=TSEModel, enable_with="tse={checkpoint: ...}")

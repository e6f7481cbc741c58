"""The codec deployment: a thin Ray Serve adapter around ``CodecPipeline``.

``CodecModel`` wraps one ``models.pipelines.codec.CodecPipeline`` (SoundStream / TinyStream,
arXiv 2107.03312): encode ``(T,)`` float32 at the codec's rate -> VXRC bytes, decode bytes ->
waveform. Clips differ in length and the convolutional codec gains little from padding them
together, so it is not batched; each configured codec (``AppArgs.codecs``) is its own
autoscaled deployment. Errors a caller causes come back as ``str`` messages (never exceptions
across the handle), which the ingress (``serve/routes/codec.py``) turns into 4xx.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import torch
from ray import serve

from models.pipelines.codec import CodecFormatError, CodecPipeline, EncodedAudio
from models.pipelines.placement import serving_device
from serve.deployments import HEALTH, Product, ReplicaHealth

log = logging.getLogger(__name__)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16, **HEALTH)
class CodecModel(ReplicaHealth):
    """One codec checkpoint: ``encode``/``decode`` off the event loop."""

    def __init__(self, checkpoint: str, *, torch_threads: int = 1, num_gpus: float = 0.0) -> None:
        torch.set_num_threads(torch_threads)
        self.device = serving_device(num_gpus)
        self.pipeline = CodecPipeline.from_checkpoint(checkpoint, device=self.device)

    def info(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "model_id": p.model_id,
            "sample_rate": p.sample_rate,
            "hop_length": p.hop_length,
            "num_quantizers": p.num_quantizers,
            "bitrate": p.bitrate(),
        }

    def _encode(self, wav: np.ndarray, num_quantizers: int | None) -> dict[str, Any] | str:
        with self.watch():
            try:
                enc = self.pipeline.encode(wav, self.pipeline.sample_rate, num_quantizers)
            except ValueError as exc:  # AudioError and the pipeline's argument checks
                return str(exc)
        return {
            "data": enc.to_bytes(),
            "bitrate": enc.bitrate,
            "frames": enc.num_frames,
            "num_quantizers": enc.num_quantizers,
            "model_id": enc.model_id,
            "duration_s": enc.num_samples / enc.sample_rate,
        }

    async def encode(self, wav: np.ndarray, num_quantizers: int | None = None) -> dict | str:
        """``(T,)`` float32 at the codec's rate -> ``{data: VXRC bytes, bitrate, frames, ...}``."""
        return await asyncio.to_thread(self._encode, wav, num_quantizers)

    def _decode(self, data: bytes) -> np.ndarray | str:
        with self.watch():
            try:
                return self.pipeline.decode(EncodedAudio.from_bytes(data))
            except (CodecFormatError, ValueError) as exc:
                return str(exc)

    async def decode(self, data: bytes) -> np.ndarray | str:
        """VXRC bytes -> ``(num_samples,)`` float32 at the codec's rate, or an error message."""
        return await asyncio.to_thread(self._decode, data)


PRODUCT = Product(
    key="codec", arg="codecs", deployment=CodecModel, enable_with="codecs={name: {checkpoint: ...}}"
)

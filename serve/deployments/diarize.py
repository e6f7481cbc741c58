"""The ``Diarization`` Serve deployment: VAD, windows, clustering and assembly around the
embedding deployment.

It runs ``models.pipelines.diarize.Diarizer`` (the clustering-based pipeline of Park et al.
2022, "A Review of Speaker Diarization"; sliding-window inference after pyannote's
``core/inference.py``) with an embedder that is not a model but the ``EmbeddingModel``
deployment's ``DeploymentHandle``: every window of a batch is sent as its own ``embed.remote``
call at once, so Serve's dynamic batching (``@serve.batch`` in ``serve/deployments/speaker.py``) groups
them, possibly with windows of other requests, and the embedding replicas autoscale on the
load. VAD (Silero, ONNX) and clustering run here, in their own replicas, so a long recording's
CPU work does not block the ingress or the model.

The diarizer is synchronous; it runs in a worker thread (``asyncio.to_thread``), where the
handle's blocking ``.result()`` is allowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from models.pipelines.diarize import DiarizationResult, Diarizer, diarization_config
from models.pipelines.vad import SileroVAD
from serve.deployments import EMBED_ATTEMPTS, EMBED_RETRY_BACKOFF_S, Product

log = logging.getLogger(__name__)


class EmbeddingError(ValueError):
    """The embedding deployment refused a window (its message says why)."""


class HandleEmbedder:
    """``Embedder`` protocol over the embedding deployment: ``embed_batch`` fans the clips out
    as concurrent ``embed.remote`` calls and waits for all of them (call from a thread)."""

    def __init__(
        self, handle: DeploymentHandle, model_name: str, sample_rate: int, embed_dim: int
    ) -> None:
        self.handle = handle
        self.model_name = model_name
        self.sample_rate = int(sample_rate)
        self.embed_dim = int(embed_dim)

    def embed_batch(self, wavs: list[np.ndarray], sample_rate: int) -> np.ndarray:
        """``N`` clips ``(T_i,)`` float32 at ``sample_rate`` -> ``(N, D)`` embeddings."""
        if int(sample_rate) != self.sample_rate:
            raise ValueError(f"clips are {sample_rate} Hz; the model wants {self.sample_rate}")
        pending = [
            self.handle.embed.remote(np.ascontiguousarray(w, np.float32), self.model_name)
            for w in wavs
        ]  # all submitted before waiting: they meet in the model's batches
        rows = [self._result(p, w) for p, w in zip(pending, wavs, strict=True)]
        for i, row in enumerate(rows):
            if isinstance(row, str):
                raise EmbeddingError(f"window {i}: {row}")
        if not rows:
            return np.zeros((0, self.embed_dim), np.float32)
        return np.stack(rows).astype(np.float32)  # (N, D)

    def _result(self, pending: Any, wav: np.ndarray) -> np.ndarray | str:
        """The answer to one window's call, sent again when its replica died while it ran
        (``EMBED_ATTEMPTS`` in all, as the ingress's own embedding calls)."""
        for attempt in range(1, EMBED_ATTEMPTS):
            try:
                return pending.result()
            except RayActorError as exc:
                log.warning("embedding replica died (attempt %d), retrying: %s", attempt, exc)
                time.sleep(EMBED_RETRY_BACKOFF_S * attempt)
                pending = self.handle.embed.remote(np.ascontiguousarray(wav, np.float32),
                                                   self.model_name)  # fmt: skip
        return pending.result()  # the last attempt raises


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=8)
class Diarization:
    """``wav (T,) float32 at the model's rate`` -> ``DiarizationResult`` (with centroids)."""

    def __init__(self, embedding: DeploymentHandle, config: dict[str, Any] | None = None) -> None:
        self.embedding = embedding
        self.cfg = diarization_config(config or {})
        self.vad = SileroVAD(self.cfg.vad)  # one per replica; it serialises its own calls

    async def diarize(
        self,
        wav: np.ndarray,
        sample_rate: int,
        model_name: str,
        embed_dim: int,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        verification_threshold: float | None = None,
    ) -> DiarizationResult:
        """``verification_threshold``: the model's calibrated EER threshold (its clustering
        threshold unless the config sets one; ``models.pipelines.diarize``)."""
        embedder = HandleEmbedder(self.embedding, model_name, sample_rate, embed_dim)
        diarizer = Diarizer(embedder, self.vad, self.cfg, verification_threshold)
        return await asyncio.to_thread(
            diarizer,
            wav,
            sample_rate,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
        )


def bind_diarization(d: Any, embedding: Any) -> dict[str, Any]:
    """``AppArgs.diarization`` (``DiarizationArgs``) -> the deployment over the embedding app."""
    if not d.enabled:
        return {}
    diarization_config(d.config)  # bad overrides fail here, in the driver, not in a replica
    return {
        "diarization": Diarization.options(
            autoscaling_config=d.autoscaling.to_serve(),
            ray_actor_options={"num_cpus": d.num_cpus},
        ).bind(embedding, d.config)
    }


PRODUCT = Product(
    key="diarization",
    arg="diarization",
    deployment=Diarization,
    enable_with="diarization.enabled=true",
    bind=bind_diarization,
)

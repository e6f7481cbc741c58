"""The embedding-model deployment: a thin Ray Serve adapter around ``models/pipelines``.

``EmbeddingModel`` loads every configured model on the backend its replica's device calls for
(``models.pipelines.placement.load_embedder``: torch ``SpeakerEmbedder`` on a GPU, ONNX Runtime
``OnnxSpeakerEmbedder`` on the checkpoint's cached export on CPU, unless the model's ``backend``
forces one) and serves ``embed(wav, model_name)`` with Serve's dynamic
batching (``@serve.batch``): concurrent requests are gathered into one
``SpeakerEmbedder.embed_batch`` call, which is exact (it only batches clips of equal frame count),
so batching never changes an embedding. The batching logic itself is :func:`embed_many`,
tested without Ray.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from ray import serve

from models.calibration import calibration_path, read_calibration
from models.hub import resolve_checkpoint
from models.pipelines.placement import backend_of, load_embedder, serving_device
from models.waveform import AudioError
from serve.deployments import HEALTH, ReplicaHealth, actor_options

log = logging.getLogger(__name__)


def model_info(name: str, spec: dict[str, Any], embedder: Any) -> dict[str, Any]:
    """What the ingress knows of a model: ids, rates, and its calibration record
    (``models.calibration``; ``calibration`` is ``{norm: {thresholds, metrics, data, ...}}``,
    None without a record or when the record belongs to another model id). The record lies
    beside the checkpoint file: for a published model by name (``pip:resemblyzer``), beside the
    converted file in the cache, where ``ray_jobs.evaluate --calibrate`` writes it."""
    ckpt = resolve_checkpoint(spec["path"])
    record = read_calibration(ckpt, embedder.model_id)
    return {
        "name": name,
        "model_id": embedder.model_id,
        "embed_dim": int(embedder.embed_dim),
        "sample_rate": int(embedder.sample_rate),
        "backend": backend_of(embedder),  # what runs it: `auto` resolved on this replica
        "path": spec["path"],
        "calibration_file": str(calibration_path(ckpt)) if record else None,
        "calibration": (
            {k: asdict(v) for k, v in record.entries.items()} if record is not None else None
        ),
        "score_norm": "asnorm" if spec.get("cohort") else "none",
    }


def embed_many(embedder: Any, wavs: list[np.ndarray]) -> list[np.ndarray | str]:
    """Embed a batch; an unusable clip yields its error message instead of failing the others.

    ``wavs``: mono float32 ``(T_i,)`` at ``embedder.sample_rate``. Returns ``(D,)`` float32 rows
    (or ``str`` errors) in input order.
    """
    try:
        return list(embedder.embed_batch(wavs, embedder.sample_rate))
    except AudioError as exc:
        if len(wavs) == 1:
            return [str(exc)]
    out: list[np.ndarray | str] = []
    for wav in wavs:  # find the bad clip(s): one by one
        try:
            out.append(embedder.embed_batch([wav], embedder.sample_rate)[0])
        except AudioError as exc:
            out.append(str(exc))
    return out


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64, **HEALTH)
class EmbeddingModel(ReplicaHealth):
    """Waveforms -> L2-normalised speaker embeddings, dynamically batched per model."""

    def __init__(
        self,
        models: dict[str, dict[str, str]],
        *,
        max_batch_size: int = 16,
        batch_wait_timeout_s: float = 0.01,
        torch_threads: int = 1,
        num_gpus: float = 0.0,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.device = serving_device(num_gpus)
        self.specs = models
        self.embedders = {
            name: load_embedder(
                spec["path"], spec.get("backend", "auto"), self.device, threads=torch_threads
            )
            for name, spec in models.items()
        }
        self.embed.set_max_batch_size(max_batch_size)
        self.embed.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, dict[str, Any]]:
        """``name -> {name, model_id, embed_dim, sample_rate, backend, path, calibration_file,
        calibration, score_norm}`` (see :func:`model_info`)."""
        return {
            name: model_info(name, self.specs[name], emb) for name, emb in self.embedders.items()
        }

    async def ping(self) -> bool:
        """Liveness for the ingress's ``/health``: answers on the event loop, not behind a batch."""
        return True

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def embed(self, wavs: list[np.ndarray], models: list[str]) -> list[np.ndarray | str]:
        """One clip per caller: ``(T,)`` float32 at the model's rate -> ``(D,)`` or an error."""
        out: list[np.ndarray | str] = [""] * len(wavs)
        for name in dict.fromkeys(models):
            idx = [i for i, m in enumerate(models) if m == name]
            embedder = self.embedders.get(name)
            if embedder is None:
                for i in idx:
                    out[i] = f"unknown model {name!r}"
                continue
            # Off the event loop, so requests keep queueing (and batching) while this runs.
            with self.watch():
                rows = await asyncio.to_thread(embed_many, embedder, [wavs[i] for i in idx])
            for i, row in zip(idx, rows, strict=True):
                out[i] = row
        return out


def bind_embedding(cfg: Any) -> Any:
    """``AppArgs`` -> the bound ``EmbeddingModel`` (every configured model, one deployment)."""
    auto = cfg.autoscaling
    return EmbeddingModel.options(
        autoscaling_config=auto.to_serve(),
        max_ongoing_requests=max(2 * cfg.max_batch_size, int(auto.target_ongoing_requests) + 1),
        max_queued_requests=cfg.model_max_queued_requests,  # beyond: BackPressureError -> 503
        ray_actor_options=actor_options(cfg.model_num_cpus, cfg.model_num_gpus),
    ).bind(
        {name: spec.model_dump() for name, spec in cfg.models.items()},
        max_batch_size=cfg.max_batch_size,
        batch_wait_timeout_s=cfg.batch_wait_timeout_s,
        torch_threads=cfg.torch_threads,
        num_gpus=cfg.model_num_gpus,
    )

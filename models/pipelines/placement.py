"""Where a served model runs: the device of a replica and the backend of an embedding model.

Ray-free, so the choice is tested without a cluster or a GPU. A Serve replica asks for
``num_gpus`` (fractional allowed: several replicas can share one GPU); Ray then exposes the GPU
it assigned through ``CUDA_VISIBLE_DEVICES``. A replica runs on CUDA only when it asked for a
GPU *and* torch sees one, so a ``num_gpus=0`` replica stays on CPU even on a GPU node (where Ray
may leave the node's GPUs visible to it).

Backends of an embedding model (``ModelSpec.backend``):

- ``auto`` (the default): torch on a GPU replica; on a CPU replica, ONNX Runtime on the graph
  exported from the checkpoint (``models/pipelines/onnx_backend.py``, cached once beside it),
  because it embeds faster than torch on CPU for the same model and input (``make bench``);
  a model the exporter refuses (GE2E reads its own mel front end) falls back to torch.
- ``torch``: always torch (the switch that turns ONNX Runtime off).
- ``onnx``: always ONNX Runtime (an ``.onnx`` file, or a checkpoint exported on first use); CPU
  only, since the ``onnxruntime`` package has no CUDA provider.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from models.onnx_export import ExportError
from models.pipelines.onnx_backend import OnnxSpeakerEmbedder, cached_onnx
from models.pipelines.speaker import SpeakerEmbedder

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")


def serving_device(num_gpus: float, cuda_available: bool | None = None) -> torch.device:
    """``cuda`` for a replica that asked for ``num_gpus > 0`` and sees a GPU, else ``cpu``.

    ``cuda_available`` defaults to ``torch.cuda.is_available()`` (inside the replica)."""
    if num_gpus < 0:
        raise ValueError(f"num_gpus must be >= 0, got {num_gpus}")
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    return torch.device("cuda" if num_gpus > 0 and cuda_available else "cpu")


def embedding_backend(requested: str, device: torch.device) -> str:
    """The backend (``torch`` or ``onnx``) that ``requested`` means on ``device``."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; use one of {', '.join(BACKENDS)}")
    if requested == "onnx" and device.type != "cpu":
        raise ValueError(
            "backend 'onnx' runs on CPU only (onnxruntime has no CUDA provider here); "
            "use 'auto' or 'torch' on a GPU replica, or set num_gpus to 0"
        )
    if requested == "auto":
        return "onnx" if device.type == "cpu" else "torch"
    return requested


def load_embedder(
    path: str | os.PathLike,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    threads: int | None = None,
) -> Any:
    """The embedder of one served model: a ``SpeakerEmbedder`` (torch, on ``device``) or an
    ``OnnxSpeakerEmbedder`` (ONNX Runtime, CPU, ``threads`` intra-op threads), as
    :func:`embedding_backend` decides. ``path``: a voxray checkpoint, a published model name, or
    an ``.onnx`` file from ``ray_jobs.export`` (ONNX Runtime only). Under ``auto``, a model the
    ONNX exporter refuses is served with torch, and the reason is logged."""
    device = torch.device(device)
    if str(path).endswith(".onnx"):
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file; torch serves voxray checkpoints (.pt)")
        embedding_backend("onnx", device)  # refuses a GPU replica with the reason
        return OnnxSpeakerEmbedder.from_file(path, num_threads=threads)
    if embedding_backend(backend, device) == "onnx":
        try:
            onnx_file = cached_onnx(path)
        except ExportError as exc:
            if backend == "onnx":
                raise
            log.warning("%s: serving with torch, the ONNX export was refused: %s", path, exc)
        else:
            return OnnxSpeakerEmbedder.from_file(onnx_file, num_threads=threads)
    return SpeakerEmbedder.from_checkpoint(path, device=device)


def backend_of(embedder: Any) -> str:
    """``onnx`` for an ONNX Runtime embedder, else ``torch``."""
    return "onnx" if isinstance(embedder, OnnxSpeakerEmbedder) else "torch"


def fatal_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` leaves the CUDA context unusable (illegal address, device-side assert,
    ECC errors: every later kernel fails), so the replica should be replaced. Out-of-memory
    errors are not fatal: the next, smaller batch may fit."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return False
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "CUDA error" in text or "CUBLAS_STATUS" in text or "CUDNN_STATUS" in text
    )

"""ONNX Runtime speaker embedder: the ``SpeakerEmbedder`` surface over an exported graph.

Runs a graph written by ``python -m ray_jobs.export`` (input ``feats: (B, T, feat_dim)`` Kaldi
fbank, output the raw ``(B, D)`` embedding) on ONNX Runtime's CPU provider. Waveform handling
(validation, resampling, fbank, exact length-aware batching) is ``WaveformEmbedder``'s, shared
with the PyTorch ``SpeakerEmbedder``; this class only adds the session and the normalisation.
Model identity, sample rate and feature sizes come from the file's metadata props, so the file is
self-describing like a voxray checkpoint. Takes paths to *model files* only, never audio files.

The graph itself is :func:`speaker_graph` (the ``speaker`` family's exporter,
``ray_jobs/export/speaker.py``, is this function). :func:`cached_onnx` exports a checkpoint once
for Serve's CPU replicas (``models/pipelines/placement.py``): the file lies beside the checkpoint,
or under ``$VOXRAY_CACHE/onnx`` where that folder is read-only, named after the checkpoint's
content hash, so a changed checkpoint gets a new export and replicas share one file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import model_from_checkpoint, read_checkpoint
from models.features import FbankConfig, checkpoint_fbank
from models.hub import cache_root, resolve_checkpoint
from models.hub.download import sha256_file
from models.onnx_export import OPSET, ExportError, OnnxGraph, export_graph
from models.pipelines.speaker import WaveformEmbedder, checkpoint_model_id

log = logging.getLogger(__name__)

INPUT_NAME = "feats"
OUTPUT_NAME = "embedding"
EXAMPLE_FRAMES = 200
REQUIRED_PROPS = ("model_name", "model_id", "sample_rate", "feat_dim", "embed_dim")


class OnnxModelError(ValueError):
    """The file is not an ONNX speaker model written by ``ray_jobs.export``."""


class OnnxSpeakerEmbedder(WaveformEmbedder):
    """Waveform -> L2-normalised speaker embedding, with ONNX Runtime.

    ``path``: an ``.onnx`` file from ``ray_jobs.export`` (FP32 or INT8). ``num_threads`` sets
    ONNX Runtime's intra-op threads (default: its own choice). ``max_batch_frames`` and
    ``min_seconds`` as in ``SpeakerEmbedder``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        num_threads: int | None = None,
        max_batch_frames: int = 60_000,
        min_seconds: float = 0.0,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        opts = ort.SessionOptions()
        if num_threads is not None:
            opts.intra_op_num_threads = int(num_threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise OnnxModelError(f"{self.path} is not a loadable ONNX model: {exc}") from exc
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_PROPS if k not in props]
        if missing:
            raise OnnxModelError(
                f"{self.path} lacks metadata {missing}; export it with `python -m ray_jobs.export`"
            )
        self.metadata: dict[str, str] = props
        self.config: dict[str, Any] = json.loads(props.get("config", "{}"))
        feat_dim = int(props["feat_dim"])
        fbank = FbankConfig(**json.loads(props["fbank"])) if "fbank" in props else None
        if fbank is None:
            fbank = FbankConfig(sample_rate=int(props["sample_rate"]), num_mel_bins=feat_dim)
        if fbank.num_mel_bins != feat_dim:
            raise OnnxModelError(
                f"{self.path}: fbank has {fbank.num_mel_bins} bins, model {feat_dim}"
            )
        super().__init__(fbank, max_batch_frames=max_batch_frames, min_seconds=min_seconds)
        self._input = self.session.get_inputs()[0].name
        self._embed_dim = int(props["embed_dim"])
        self._model_id = props["model_id"]
        self.model_name = props["model_name"]

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> OnnxSpeakerEmbedder:
        """Same as the constructor; mirrors ``SpeakerEmbedder.from_checkpoint``."""
        return cls(path, **kwargs)

    @property
    def embed_dim(self) -> int:
        return self._embed_dim

    @property
    def model_id(self) -> str:
        """The exported checkpoint's ``name:sha12`` (``+int8`` for a quantised file)."""
        return self._model_id

    def embed_feats(self, feats: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` fbank -> ``(B, D)`` L2-normalised float32 tensor."""
        feats = torch.as_tensor(feats)
        self._check_feats(feats)
        x = np.ascontiguousarray(feats.detach().cpu().numpy(), dtype=np.float32)
        (emb,) = self.session.run(None, {self._input: x})  # (B, D) raw
        return F.normalize(torch.from_numpy(emb).float(), dim=-1)

    def __repr__(self) -> str:
        return (
            f"OnnxSpeakerEmbedder(model_id={self.model_id!r}, sample_rate={self.sample_rate}, "
            f"path={str(self.path)!r})"
        )


def speaker_graph(model: nn.Module, meta: dict[str, Any]) -> OnnxGraph:
    """The embedder on fbank features, with its front-end settings as metadata.

    Input ``feats: (batch, frames, feat_dim)`` float32 Kaldi fbank (mean-normalised, as
    ``models/features.py`` makes it), output ``embedding: (batch, embed_dim)`` raw, not
    L2-normalised; batch and frames are dynamic. A model with its own front end
    (``front_end_config``, e.g. GE2E's mel and partial windows) raises ``ExportError`` rather
    than being exported with a front end it was not trained on.
    """
    cfg = model.cfg
    own = getattr(model, "front_end_config", None)
    if own is not None and not isinstance(own, FbankConfig):
        raise ExportError(
            f"{type(model).__name__} reads {type(own).__name__} features, not the Kaldi fbank "
            "that the ONNX speaker backend computes; serve its checkpoint with PyTorch instead"
        )
    fbank = checkpoint_fbank({"meta": meta, "config": {"feat_dim": cfg.feat_dim}})
    return OnnxGraph(
        module=model,
        example=torch.randn(2, EXAMPLE_FRAMES, cfg.feat_dim),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch"}},
        metadata={
            "sample_rate": str(fbank.sample_rate),
            "feat_dim": str(cfg.feat_dim),
            "embed_dim": str(cfg.embed_dim),
            "fbank": json.dumps(dataclasses.asdict(fbank), sort_keys=True),
            "normalized": "false",
        },
    )


def onnx_cache_path(checkpoint: Path, digest: str) -> Path:
    """Where the export of ``checkpoint`` (content sha256 ``digest``) lives: beside it when its
    folder is writable, else under ``$VOXRAY_CACHE/onnx``."""
    name = f"{checkpoint.stem}.{digest[:16]}.opset{OPSET}.onnx"
    folder = checkpoint.parent
    if not os.access(folder, os.W_OK):
        folder = cache_root() / "onnx"
    return folder / name


def cached_onnx(checkpoint: str | os.PathLike) -> Path:
    """The FP32 ONNX export of a speaker checkpoint (a path or a published model name), written
    on the first call and reused after (:func:`onnx_cache_path`). Its ``model_id`` is the torch
    embedder's (``name:sha12`` of the file), so calibration records and enrollments carry over.
    Raises ``ExportError`` for a model the exporter refuses."""
    path = resolve_checkpoint(checkpoint)
    out = onnx_cache_path(path, sha256_file(path))
    if out.is_file():
        return out
    ckpt = read_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    graph = speaker_graph(model.eval(), ckpt.get("meta") or {})  # refusals raise before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    # Replicas starting together may export at once: each writes its own file, and the atomic
    # rename leaves one complete (identical) file in place.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        export_graph(model, graph, tmp, model_id=checkpoint_model_id(path, model))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to ONNX at %s", path, out)
    return out

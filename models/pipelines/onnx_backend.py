"""ONNX Runtime speaker embedder: the ``SpeakerEmbedder`` surface over an exported graph.

Runs a graph written by ``python -m ray_jobs.export`` (input ``feats: (B, T, feat_dim)`` Kaldi
fbank, output the raw ``(B, D)`` embedding) on ONNX Runtime's CPU provider. Waveform handling
(validation, resampling, fbank, exact length-aware batching) is ``WaveformEmbedder``'s, shared
with the PyTorch ``SpeakerEmbedder``; this class only adds the session and the normalisation.
Model identity, sample rate and feature sizes come from the file's metadata props, so the file is
self-describing like a voxray checkpoint. Takes paths to *model files* only, never audio files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.features import FbankConfig
from models.pipelines.speaker import WaveformEmbedder

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

"""ONNX graph of a ``speaker``-family model (Ray-free; written by ``ray_jobs/export/onnx.py``).

    python -m ray_jobs.export --checkpoint CKPT.pt --format onnx [--int8] --output model.onnx

The graph is the registered model alone: input ``feats: (batch, frames, feat_dim)`` float32
Kaldi fbank (mean-normalised, as ``models/features.py`` makes it), output ``embedding: (batch,
embed_dim)`` **raw, not L2-normalised** (the registry's speaker contract); the front end and the
normalisation run in ``models/pipelines/onnx_backend.py``. Batch and frame axes are dynamic.

Only models that read the Kaldi fbank export: the ONNX backend computes that front end. A model
with its own front end (``front_end_config``, e.g. GE2E's mel and partial windows) is refused
with an ``ExportError`` rather than exported with a front end it was not trained on.

Metadata props besides the common ones (``ray_jobs/export/onnx.py``): ``sample_rate``,
``feat_dim``, ``embed_dim``, ``fbank`` (JSON of the ``FbankConfig``), ``normalized``. The
``model_id`` is ``name:sha12`` of the checkpoint, as ``SpeakerEmbedder.from_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch
from torch import nn

from models.features import FbankConfig, checkpoint_fbank
from ray_jobs.export.onnx import ExportError, OnnxGraph

INPUT_NAME = "feats"
OUTPUT_NAME = "embedding"
EXAMPLE_FRAMES = 200


def graph(model: nn.Module, meta: dict[str, Any]) -> OnnxGraph:
    """The embedder on fbank features, with its front-end settings as metadata."""
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

"""ONNX graph of a ``classify``-family model (Ray-free; written by ``models/onnx_export.py``).

ACDNet (Mohaimenuzzaman et al. 2023, arXiv 2103.03483): input ``wav: (batch, input_length)``
float32 crops at the model's rate, output ``logits: (batch, num_classes)``; the 10-crop protocol
stays in ``models/pipelines/classify.py``. The class names of the checkpoint's ``meta`` go into
the ``classes`` metadata prop (JSON list).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from models.onnx_export import OnnxGraph


def graph(model: nn.Module, meta: dict[str, Any]) -> OnnxGraph:
    """The classifier on fixed-length crops, with its input contract as metadata."""
    cfg = model.cfg
    props = {
        "sample_rate": str(cfg.sample_rate),
        "input_length": str(cfg.input_length),
        "num_classes": str(cfg.num_classes),
    }
    if meta.get("classes") is not None:
        props["classes"] = json.dumps(list(meta["classes"]))
    return OnnxGraph(
        module=model,
        example=torch.randn(2, cfg.input_length) * 0.1,
        input_name="wav",
        output_name="logits",
        dynamic_axes={"wav": {0: "batch"}, "logits": {0: "batch"}},
        metadata=props,
    )

"""Export a voxray checkpoint to ONNX, for every family the same way (Ray-free).

The checkpoint's family (``models.registry.get_entry(model_name).family``) picks its graph
builder, ``ray_jobs/export/<family>.py``'s ``graph(model, meta) -> OnnxGraph``, found by name
(``ray_jobs.families``); the one exporter, ``models/onnx_export.py``, writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from models.checkpoint import model_from_checkpoint, read_checkpoint
from models.onnx_export import OPSET, ExportError, OnnxGraph, export_graph
from models.pipelines.speaker import checkpoint_model_id
from models.registry import get_entry
from ray_jobs.families import UnknownFamilyError, family_module

PACKAGE = "ray_jobs.export"
FORMATS = ("onnx",)


def model_graph(model: nn.Module, meta: dict[str, Any] | None = None) -> OnnxGraph:
    """The ONNX graph of a registered model, from its family's ``graph`` function."""
    name = getattr(model, "registry_name", None)
    if name is None:
        raise ExportError(f"{type(model).__name__} is not a registered voxray model")
    try:
        module = family_module(PACKAGE, get_entry(name).family, "graph", "ONNX exporter")
    except UnknownFamilyError as exc:
        raise ExportError(str(exc)) from exc
    return module.graph(model.eval(), meta or {})


def export_model(
    model: nn.Module,
    output: str | Path,
    *,
    model_id: str,
    int8: bool = False,
    meta: dict[str, Any] | None = None,
    opset: int = OPSET,
) -> Path:
    """Export a registered model to ``output`` with its family's graph (``meta``: the
    checkpoint's, e.g. a classifier's ``classes``)."""
    graph = model_graph(model, meta)
    return export_graph(model, graph, output, model_id=model_id, int8=int8, opset=opset)


def export_checkpoint(
    checkpoint: str | Path, output: str | Path, *, fmt: str = "onnx", int8: bool = False
) -> Path:
    """Load a voxray checkpoint and export it; raises ``FileNotFoundError``/``CheckpointError``
    /``ExportError`` with a message."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    meta = ckpt.get("meta") or {}
    model_id = meta.get("model_id") or checkpoint_model_id(checkpoint, model)
    return export_model(model, output, model_id=model_id, int8=int8, meta=meta)

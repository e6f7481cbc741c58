"""The one ONNX exporter every family's graph goes through (Ray-free).

A family module (``ray_jobs/export/<family>.py``) describes what to export as an
:class:`OnnxGraph` (module, example input, names, dynamic axes, its metadata); this module writes
it the same way for every family:

- the legacy TorchScript exporter (``torch.onnx.export(dynamo=False)`` with ``dynamic_axes``),
  opset 17: the dynamo exporter needs ``onnxscript``, which is not a dependency;
- a fixed ``repeat_interleave`` symbolic. The stock one (torch 2.11) normalises a negative
  ``dim`` *in place* on the traced constant, which constant pooling shares with other ops:
  CAM++'s ``repeat_interleave(dim=-1)`` then turned its stats-pooling ``cat(dim=-1)`` into
  ``axis=2`` and the model failed to load. :func:`fixed_symbolics` hands the stock symbolic a
  private copy of ``dim`` for the duration of the export;
- metadata props (``onnx.ModelProto.metadata_props``): ``model_name``, ``family``, ``config``
  (JSON), ``model_id`` (``+int8`` appended for the quantised file, whose outputs differ
  slightly), ``quantization``, then the family's own keys;
- ``int8=True`` writes the FP32 graph to a temporary file and quantises it with
  ``onnxruntime.quantization.quantize_dynamic`` (int8 weights of MatMul/Conv, activations
  quantised at run time), keeping the metadata.

The runtime side is ``models/pipelines/onnx_backend.py``.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.config import to_dict
from models.registry import get_entry

OPSET = 17


class ExportError(ValueError):
    """The model cannot be exported (no exporter for its family, bad opset, failed export)."""


@dataclass(frozen=True)
class OnnxGraph:
    """What a family exports: ``module(example)`` traced with these names and dynamic axes."""

    module: nn.Module
    example: torch.Tensor
    input_name: str
    output_name: str
    dynamic_axes: dict[str, dict[int, str]]
    metadata: dict[str, str] = field(default_factory=dict)  # the family's own props


@contextmanager
def fixed_symbolics(opset: int) -> Iterator[None]:
    """Register a ``repeat_interleave`` symbolic that cannot corrupt shared constants."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper as sh
    from torch.onnx._internal.torchscript_exporter import symbolic_opset13 as o13

    def repeat_interleave(
        g: Any, self: Any, repeats: Any, dim: Any = None, output_size: Any = None
    ):
        if not sh._is_none(dim):  # a fresh Constant the stock symbolic may mutate freely
            dim = g.op("Constant", value_t=torch.tensor(int(sh._maybe_get_const(dim, "i"))))
        return o13.repeat_interleave(g, self, repeats, dim, output_size)

    torch.onnx.register_custom_op_symbolic("aten::repeat_interleave", repeat_interleave, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::repeat_interleave", opset)


def set_metadata(path: Path, props: dict[str, str]) -> None:
    """Replace the metadata props of the ONNX file at ``path``."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def export_graph(
    model: nn.Module,
    graph: OnnxGraph,
    output: str | Path,
    *,
    model_id: str,
    int8: bool = False,
    opset: int = OPSET,
) -> Path:
    """Write ``graph`` (built from the registered ``model``) to ``output`` (module docstring)."""
    if opset < OPSET:
        raise ExportError(f"opset must be >= {OPSET}, got {opset}")
    props = {
        "model_name": model.registry_name,
        "family": get_entry(model.registry_name).family,
        "config": json.dumps(to_dict(model.cfg), sort_keys=True),
        "model_id": model_id + ("+int8" if int8 else ""),
        "quantization": "dynamic-int8" if int8 else "none",
        **graph.metadata,
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else output
        with fixed_symbolics(opset), warnings.catch_warnings():
            # the deprecation notice of the TorchScript exporter, and tracer notes on shape
            # checks (e.g. x-vector's minimum length) that are not part of the graph
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph.module.eval(),
                (graph.example,),
                str(fp32),
                dynamo=False,
                opset_version=opset,
                input_names=[graph.input_name],
                output_names=[graph.output_name],
                dynamic_axes=graph.dynamic_axes,
                do_constant_folding=True,
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(output), weight_type=QuantType.QInt8)
    set_metadata(output, props)
    return output

"""Export a speaker checkpoint to ONNX, optionally with dynamic INT8 weights.

    python -m ray_jobs.export --checkpoint CKPT.pt --format onnx [--int8] --output model.onnx

The graph is the registered model alone: input ``feats: (batch, frames, feat_dim)`` float32
Kaldi fbank (mean-normalised, as ``models/features.py`` makes it), output ``embedding: (batch,
embed_dim)`` **raw, not L2-normalised** (the registry's speaker contract); the front end and the
normalisation run in ``models/pipelines/onnx_backend.py``. Batch and frame axes are dynamic.

Exporter: the legacy TorchScript exporter (``torch.onnx.export(dynamo=False)`` with
``dynamic_axes``), opset 17. The dynamo exporter needs ``onnxscript``, which is not a dependency.
The TorchScript exporter's ``repeat_interleave`` symbolic (torch 2.11) normalises a negative
``dim`` *in place* on the traced constant, which constant pooling shares with other ops: CAM++'s
``repeat_interleave(dim=-1)`` then turned its stats-pooling ``cat(dim=-1)`` into ``axis=2`` and the
model failed to load. ``_fixed_symbolics`` registers a wrapper that hands the stock symbolic a
private copy of ``dim`` for the duration of the export.

Metadata props (``onnx.ModelProto.metadata_props``): ``model_name``, ``config`` (JSON),
``model_id`` (``name:sha12`` of the checkpoint, as ``SpeakerEmbedder.from_checkpoint``; with
``+int8`` appended for the quantised file, whose embeddings differ slightly), ``sample_rate``,
``feat_dim``, ``embed_dim``, ``fbank`` (JSON of the ``FbankConfig``), ``quantization``.

Codec and classifier checkpoints (``codec``/``classify`` families) are dispatched to
``ray_jobs/export_codec.py`` (codec encoder + quantizer: waveform in, codes out; classifier:
waveform crop in, logits out). ``--size-table`` prints FP32/INT8 ONNX sizes of every TinyStream
and ACDNet preset instead of exporting a checkpoint.

``--int8`` writes the FP32 graph to a temporary file and quantises it with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights of MatMul/Conv, activations quantised
at run time), keeping the metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import CheckpointError
from models.config import to_dict
from models.features import FbankConfig
from models.pipelines.speaker import checkpoint_model_id

log = logging.getLogger("ray_jobs.export.speaker")

OPSET = 17
FORMATS = ("onnx",)
INPUT_NAME = "feats"
OUTPUT_NAME = "embedding"


class ExportError(ValueError):
    """The checkpoint cannot be exported (wrong family, failed export)."""


@contextmanager
def _fixed_symbolics(opset: int) -> Iterator[None]:
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


def _metadata(model: nn.Module, model_id: str, fbank: FbankConfig) -> dict[str, str]:
    cfg = model.cfg
    return {
        "model_name": model.registry_name,
        "config": json.dumps(to_dict(cfg), sort_keys=True),
        "model_id": model_id,
        "sample_rate": str(fbank.sample_rate),
        "feat_dim": str(cfg.feat_dim),
        "embed_dim": str(cfg.embed_dim),
        "fbank": json.dumps(dataclasses.asdict(fbank), sort_keys=True),
        "normalized": "false",
        "quantization": "none",
    }


def _set_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    output: str | Path,
    *,
    model_id: str,
    int8: bool = False,
    opset: int = OPSET,
    example_frames: int = 200,
) -> Path:
    """Export a ``speaker``-family model to ``output`` (see the module docstring)."""
    import warnings

    from models.registry import get_entry

    name = getattr(model, "registry_name", None)
    if name is None or get_entry(name).family != "speaker":
        raise ExportError(
            f"only speaker-family models export to ONNX; {name or type(model).__name__} is not one"
        )
    if opset < 17:
        raise ExportError(f"opset must be >= 17, got {opset}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    fbank = FbankConfig(num_mel_bins=model.cfg.feat_dim)
    example = torch.randn(2, example_frames, model.cfg.feat_dim)
    props = _metadata(model, model_id + ("+int8" if int8 else ""), fbank)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else output
        with _fixed_symbolics(opset), warnings.catch_warnings():
            # the deprecation notice of the TorchScript exporter, and tracer notes on shape
            # checks (e.g. x-vector's minimum length) that are not part of the graph
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(fp32),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 1: "frames"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            props["quantization"] = "dynamic-int8"
            quantize_dynamic(str(fp32), str(output), weight_type=QuantType.QInt8)
    _set_metadata(output, props)
    return output


def export_checkpoint(
    checkpoint: str | Path, output: str | Path, *, fmt: str = "onnx", int8: bool = False
) -> Path:
    """Load a voxray checkpoint and export it; raises ``FileNotFoundError``/``CheckpointError``
    /``ExportError`` with a message."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    from models.checkpoint import model_from_checkpoint, read_checkpoint
    from models.registry import get_entry

    ckpt = read_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    if get_entry(model.registry_name).family in ("codec", "classify"):
        from ray_jobs.export.codec import export_product_onnx

        meta = ckpt.get("meta") or {}
        model_id = meta.get("model_id") or checkpoint_model_id(checkpoint, model)
        return export_product_onnx(
            model, output, model_id=model_id, int8=int8, classes=meta.get("classes")
        )
    return export_onnx(model, output, model_id=checkpoint_model_id(checkpoint, model), int8=int8)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.export", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", help="voxray checkpoint (.pt)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx")
    p.add_argument("--int8", action="store_true", help="dynamic INT8 quantisation of the weights")
    p.add_argument("-o", "--output", help="file to write, e.g. model.onnx")
    p.add_argument(
        "--size-table",
        action="store_true",
        help="print FP32/INT8 sizes of the codec/ACDNet presets",
    )
    args = p.parse_args(argv)
    if args.size_table:
        from ray_jobs.export.codec import format_size_table, size_table

        print(format_size_table(size_table()))
        return 0
    if not args.checkpoint or not args.output:
        p.error("--checkpoint and --output are required (or --size-table)")
    try:
        out = export_checkpoint(args.checkpoint, args.output, fmt=args.fmt, int8=args.int8)
    except (FileNotFoundError, CheckpointError, ExportError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return 0

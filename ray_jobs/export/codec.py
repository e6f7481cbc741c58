"""ONNX export of the codec encoder + quantizer and of sound-event classifiers.

Called by ``python -m ray_jobs.export`` when the checkpoint's family is ``codec`` or
``classify`` (the speaker path stays in ``ray_jobs/export.py``; same exporter, opset, metadata
and dynamic INT8 quantisation through ``onnxruntime.quantization.quantize_dynamic``).

* codec (SoundStream / TinyStream, Zeghidour et al. 2021, arXiv 2107.03312): the deployable half
  of the codec, the part that runs on the sending device. Input ``wav: (batch, samples)`` float32
  at the model's rate, ``samples`` a multiple of ``hop_length`` (pad the tail with zeros as
  ``CodecPipeline`` does); output ``codes: (batch, num_quantizers, frames)`` int64, all
  quantizers (residual VQ: the first ``n`` rows are the codes of an ``n``-quantizer stream).
  Batch and sample axes are dynamic. The nearest-codeword search is an ``ArgMin`` over squared
  distances, so FP32 codes equal torch's except where two codewords are (almost) equidistant:
  float summation order differs between the runtimes.
* classify (ACDNet, Mohaimenuzzaman et al. 2023, arXiv 2103.03483): input ``wav: (batch,
  input_length)`` float32 crops at the model's rate, output ``logits: (batch, num_classes)``;
  the 10-crop protocol stays in ``models/pipelines/classify.py``.

``size_table()`` exports every TinyStream preset and both ACDNet presets (random weights: the
file size does not depend on their values) to FP32 and INT8 and returns the sizes in bytes.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.config import to_dict
from models.registry import get_entry

OPSET = 17


class CodecEncoderGraph(nn.Module):
    """``wav: (B, T)`` (``T`` a multiple of the hop) -> codes ``(B, n_q, T / hop)`` int64."""

    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.encoder = codec.encoder
        self.quantizer = codec.quantizer

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(wav[:, None]))


def _graph(model: nn.Module) -> tuple[nn.Module, torch.Tensor, dict, list[str], dict[str, str]]:
    """(module to export, example input, dynamic axes, output names, family metadata)."""
    name = model.registry_name
    family = get_entry(name).family
    cfg = model.cfg
    if family == "codec":
        example = torch.randn(2, 8 * cfg.hop_length) * 0.1
        axes = {"wav": {0: "batch", 1: "samples"}, "codes": {0: "batch", 2: "frames"}}
        meta = {
            "sample_rate": str(cfg.sample_rate),
            "hop_length": str(cfg.hop_length),
            "num_quantizers": str(cfg.num_quantizers),
            "codebook_size": str(cfg.codebook_size),
        }
        return CodecEncoderGraph(model).eval(), example, axes, ["codes"], meta
    if family == "classify":
        example = torch.randn(2, cfg.input_length) * 0.1
        axes = {"wav": {0: "batch"}, "logits": {0: "batch"}}
        meta = {
            "sample_rate": str(cfg.sample_rate),
            "input_length": str(cfg.input_length),
            "num_classes": str(cfg.num_classes),
        }
        return model.eval(), example, axes, ["logits"], meta
    raise ValueError(f"{name} is a {family!r} model; this module exports codec and classify")


def export_product_onnx(
    model: nn.Module,
    output: str | Path,
    *,
    model_id: str,
    int8: bool = False,
    classes: list[str] | None = None,
) -> Path:
    """Export a codec (encoder + quantizer) or classifier to ``output`` (module docstring)."""
    from ray_jobs.export.speaker import _set_metadata

    module, example, axes, out_names, meta = _graph(model)
    props = {
        "model_name": model.registry_name,
        "family": get_entry(model.registry_name).family,
        "config": json.dumps(to_dict(model.cfg), sort_keys=True),
        "model_id": model_id + ("+int8" if int8 else ""),
        "quantization": "dynamic-int8" if int8 else "none",
        **meta,
    }
    if classes is not None:
        props["classes"] = json.dumps(list(classes))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else output
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript-exporter deprecation, tracer notes
            torch.onnx.export(
                module,
                (example,),
                str(fp32),
                dynamo=False,
                opset_version=OPSET,
                input_names=["wav"],
                output_names=out_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(fp32), str(output), weight_type=QuantType.QInt8)
    _set_metadata(output, props)
    return output


@dataclass(frozen=True)
class SizeRow:
    """One preset: parameter count and ONNX file sizes in bytes."""

    preset: str
    params: int
    fp32_bytes: int
    int8_bytes: int


SIZE_PRESETS = (
    "tinystream-ultra_tiny",
    "tinystream-tiny",
    "tinystream-small",
    "tinystream-medium",
    "tinystream-full",
    "micro-acdnet",
    "acdnet",
)


def size_table(presets: tuple[str, ...] = SIZE_PRESETS) -> list[SizeRow]:
    """Export each preset (random weights) to FP32 and INT8 ONNX and measure the files."""
    from models import build_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            torch.manual_seed(0)
            model = build_model(preset).eval()
            params = sum(p.numel() for p in model.parameters())
            if get_entry(model.registry_name).family == "codec":  # the exported half only
                params = sum(p.numel() for p in CodecEncoderGraph(model).parameters())
                params += sum(
                    b.numel() for n, b in model.quantizer.named_buffers() if n.endswith("codebook")
                )
            sizes = [
                export_product_onnx(model, Path(tmp, f"{preset}-{q}.onnx"), model_id=preset, int8=q)
                .stat()
                .st_size
                for q in (False, True)
            ]
            rows.append(SizeRow(preset, params, sizes[0], sizes[1]))
    return rows


def format_size_table(rows: list[SizeRow]) -> str:
    """Markdown table of :func:`size_table` (codec rows: encoder + quantizer only)."""
    lines = [
        "| preset | exported params | FP32 ONNX (KB) | INT8 ONNX (KB) | INT8 / FP32 |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.params:,} | {r.fp32_bytes / 1024:.1f} | "
            f"{r.int8_bytes / 1024:.1f} | {r.int8_bytes / r.fp32_bytes:.2f} |"
        )
    return "\n".join(lines)

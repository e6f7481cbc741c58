"""ONNX file sizes of the small presets: ``python -m ray_jobs.export --size-table`` (Ray-free).

``size_table()`` exports every TinyStream preset and both ACDNet presets (random weights: the
file size does not depend on their values) to FP32 and INT8 and returns the sizes in bytes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models import build_model
from ray_jobs.export.core import export_model, model_graph


def exported_params(module: nn.Module) -> int:
    """Parameters of an exported graph, codebooks included (a codec's are buffers)."""
    params = sum(p.numel() for p in module.parameters())
    return params + sum(b.numel() for n, b in module.named_buffers() if n.endswith("codebook"))


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
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            torch.manual_seed(0)
            model = build_model(preset).eval()
            params = exported_params(model_graph(model).module)
            sizes = [
                export_model(model, Path(tmp, f"{preset}-{q}.onnx"), model_id=preset, int8=q)
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

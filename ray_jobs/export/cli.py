"""``python -m ray_jobs.export``: export a checkpoint of any family to ONNX, optionally INT8.

    python -m ray_jobs.export --checkpoint CKPT.pt --format onnx [--int8] --output model.onnx
    python -m ray_jobs.export --size-table

The family's graph (``ray_jobs/export/<family>.py``: speaker embedder on fbank, codec encoder +
quantizer, classifier) goes through the one exporter, ``models/onnx_export.py``.
``--size-table`` prints FP32/INT8 ONNX sizes of every TinyStream and ACDNet preset instead of
exporting a checkpoint.
"""

from __future__ import annotations

import argparse
import logging

from ray_jobs.cli import USER_ERRORS, configure_cli_logging, user_error
from ray_jobs.export.core import FORMATS, export_checkpoint
from ray_jobs.export.sizes import format_size_table, size_table

log = logging.getLogger("ray_jobs.export.cli")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.export",
        description="Export a checkpoint of any family to ONNX, optionally with INT8 weights.",
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
    configure_cli_logging()
    if args.size_table:
        print(format_size_table(size_table()))
        return 0
    if not args.checkpoint or not args.output:
        p.error("--checkpoint and --output are required (or --size-table)")
    try:
        out = export_checkpoint(args.checkpoint, args.output, fmt=args.fmt, int8=args.int8)
    except USER_ERRORS as exc:  # CheckpointError and ExportError are ValueErrors
        return user_error(exc)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return 0

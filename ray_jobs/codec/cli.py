"""Command-line codec: audio files <-> compact ``.vxrc`` code files.

    python -m ray_jobs.codec encode --checkpoint CKPT IN.wav [IN2.wav | DIR ...] -o OUT
        [--num-quantizers N] [--chunk-seconds S]
    python -m ray_jobs.codec decode --checkpoint CKPT IN.vxrc [... | DIR] -o OUT

With one input, ``-o`` is the output file; with several inputs (or a folder) ``-o`` is a folder
that receives ``<stem>.vxrc`` / ``<stem>.wav``. Each file is handled on its own: a failure is
logged and listed at the end and never blocks the others. Exit status: 0 when all succeeded,
2 when any failed (unreadable audio, corrupt stream, codes of another model) or the checkpoint
is unusable. Per file it logs the bitrate, input/output sizes and the real-time factor
(processing time / audio duration; < 1 is faster than real time). The work is
``ray_jobs/codec/core.py``'s.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from datasets.audio import AUDIO_EXTENSIONS
from models.checkpoint import CheckpointError
from models.pipelines.codec import CodecPipeline
from ray_jobs.cli import configure_cli_logging
from ray_jobs.codec.core import (
    CODE_EXT,
    CodecCliError,
    decode_file,
    encode_file,
    expand_inputs,
    output_paths,
)

log = logging.getLogger("ray_jobs.codec.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.codec", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("encode", "audio -> .vxrc"), ("decode", ".vxrc -> .wav")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--checkpoint", required=True, help="codec checkpoint (.pt)")
        s.add_argument("inputs", nargs="+", help="files and/or folders")
        s.add_argument("-o", "--output", required=True, help="file (one input) or folder")
        if name == "encode":
            s.add_argument("--num-quantizers", type=int, default=None, help="fewer = lower kbps")
            s.add_argument("--chunk-seconds", type=float, default=None, help="streaming encode")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        pipeline = CodecPipeline.from_checkpoint(args.checkpoint)
    except (FileNotFoundError, CheckpointError, KeyError, ValueError) as exc:
        log.error("cannot load codec checkpoint %s: %s", args.checkpoint, exc)
        return 2
    encode = args.command == "encode"
    inputs = expand_inputs(args.inputs, AUDIO_EXTENSIONS if encode else (CODE_EXT,))
    if not inputs:
        log.error("no input files in %s", ", ".join(args.inputs))
        return 2
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
    outs = output_paths(inputs, args.output, CODE_EXT if encode else ".wav", many)
    failures: list[str] = []
    for src, dst in zip(inputs, outs, strict=True):
        try:
            if encode:
                r = encode_file(
                    pipeline, src, dst,
                    num_quantizers=args.num_quantizers, chunk_seconds=args.chunk_seconds,
                )  # fmt: skip
            else:
                r = decode_file(pipeline, src, dst)
        except CodecCliError as exc:
            log.error("%s", exc)
            failures.append(f"{src}: {exc}")
            continue
        log.info(
            "%s -> %s: %.2f s, %.2f kbps, %d -> %d bytes, RTF %.3f",
            r.source, r.output, r.seconds, r.bitrate_kbps, r.in_bytes, r.out_bytes, r.rtf,
        )  # fmt: skip
    done = len(inputs) - len(failures)
    log.info("%d of %d files %sd", done, len(inputs), args.command)
    if failures:
        log.error("failed (%d):\n  %s", len(failures), "\n  ".join(failures))
        return 2
    return 0

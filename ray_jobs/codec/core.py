"""Command-line codec: audio files <-> compact ``.vxrc`` code files.

    python -m ray_jobs.codec encode --checkpoint CKPT IN.wav [IN2.wav | DIR ...] -o OUT
        [--num-quantizers N] [--chunk-seconds S]
    python -m ray_jobs.codec decode --checkpoint CKPT IN.vxrc [... | DIR] -o OUT

With one input, ``-o`` is the output file; with several inputs (or a folder) ``-o`` is a folder
that receives ``<stem>.vxrc`` / ``<stem>.wav``. Each file is handled on its own: a failure is
logged and listed at the end and never blocks the others. Exit status: 0 when all succeeded,
2 when any failed (unreadable audio, corrupt stream, codes of another model) or the checkpoint
is unusable. Per file it logs the bitrate, input/output sizes and the real-time factor
(processing time / audio duration; < 1 is faster than real time).

The byte format and the model-id check are ``models/pipelines/codec.py``'s (SoundStream,
Zeghidour et al. 2021, arXiv 2107.03312; container in the spirit of EnCodec's ``.ecdc``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets.audio import AudioError, load_audio, write_audio
from models.checkpoint import CheckpointError
from models.pipelines.codec import CodecFormatError, CodecPipeline, EncodedAudio
from ray_jobs.cli import configure_cli_logging

log = logging.getLogger("ray_jobs.codec.core")

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
CODE_EXT = ".vxrc"


class CodecCliError(ValueError):
    """A per-file failure with a message for the user."""


@dataclass(frozen=True)
class FileResult:
    """One converted file: sizes in bytes, ``seconds`` of audio, ``rtf`` = time / seconds."""

    source: str
    output: str
    in_bytes: int
    out_bytes: int
    seconds: float
    bitrate_kbps: float
    rtf: float


def expand_inputs(inputs: Sequence[str], exts: tuple[str, ...]) -> list[Path]:
    """Files as given, folders -> their files with one of ``exts`` (sorted, recursive)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in exts)
        else:
            out.append(p)
    return out


def encode_file(
    pipeline: CodecPipeline,
    src: Path,
    dst: Path,
    *,
    num_quantizers: int | None = None,
    chunk_seconds: float | None = None,
) -> FileResult:
    """Audio file -> ``.vxrc``; raises :class:`CodecCliError` with the reason."""
    try:
        wav, sr = load_audio(src)
    except (AudioError, OSError) as exc:
        raise CodecCliError(f"cannot read audio {src}: {exc}") from exc
    t0 = time.perf_counter()
    try:
        enc = pipeline.encode(wav, sr, num_quantizers, chunk_seconds=chunk_seconds)
    except ValueError as exc:
        raise CodecCliError(f"{src}: {exc}") from exc
    data = enc.to_bytes()
    elapsed = time.perf_counter() - t0
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    seconds = enc.num_samples / enc.sample_rate
    return FileResult(
        str(src), str(dst), src.stat().st_size, len(data), seconds, enc.bitrate / 1e3,
        elapsed / max(seconds, 1e-9),
    )  # fmt: skip


def decode_file(pipeline: CodecPipeline, src: Path, dst: Path) -> FileResult:
    """``.vxrc`` -> WAV; wrong model, corrupt or unreadable input -> :class:`CodecCliError`."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise CodecCliError(f"cannot read {src}: {exc}") from exc
    try:
        enc = EncodedAudio.from_bytes(data)
    except CodecFormatError as exc:
        raise CodecCliError(f"{src} is not a valid codec file: {exc}") from exc
    t0 = time.perf_counter()
    try:
        wav = pipeline.decode(enc)
    except ValueError as exc:
        raise CodecCliError(f"{src}: {exc}") from exc
    elapsed = time.perf_counter() - t0
    write_audio(dst, wav, enc.sample_rate)
    seconds = enc.num_samples / enc.sample_rate
    return FileResult(
        str(src), str(dst), len(data), dst.stat().st_size, seconds, enc.bitrate / 1e3,
        elapsed / max(seconds, 1e-9),
    )  # fmt: skip


def _outputs(inputs: list[Path], output: str, ext: str, many: bool) -> list[Path]:
    if not many:
        return [Path(output)]
    out_dir = Path(output)
    names = [p.stem for p in inputs]
    # disambiguate equal stems from different folders
    return [
        out_dir / (f"{n}{ext}" if names.count(n) == 1 else f"{n}_{i}{ext}")
        for i, n in enumerate(names)
    ]


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
    inputs = expand_inputs(args.inputs, AUDIO_EXTS if encode else (CODE_EXT,))
    if not inputs:
        log.error("no input files in %s", ", ".join(args.inputs))
        return 2
    many = len(inputs) > 1 or any(Path(i).is_dir() for i in args.inputs)
    outs = _outputs(inputs, args.output, CODE_EXT if encode else ".wav", many)
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

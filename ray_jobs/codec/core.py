"""Audio files <-> compact ``.vxrc`` code files, one file at a time (Ray-free; the CLI is
``ray_jobs/codec/cli.py``).

Each file is handled on its own: a failure raises :class:`CodecCliError` with the reason, so the
caller can list it and go on with the others. :class:`FileResult` holds the bitrate,
input/output sizes and the real-time factor (processing time / audio duration; < 1 is faster
than real time).

The byte format and the model-id check are ``models/pipelines/codec.py``'s (SoundStream,
Zeghidour et al. 2021, arXiv 2107.03312; container in the spirit of EnCodec's ``.ecdc``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets.audio import AudioError, load_audio, write_audio
from models.pipelines.codec import CodecFormatError, CodecPipeline, EncodedAudio

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


def output_paths(inputs: list[Path], output: str, ext: str, many: bool) -> list[Path]:
    """``output`` itself for one input, else ``output/<stem><ext>`` per input."""
    if not many:
        return [Path(output)]
    out_dir = Path(output)
    names = [p.stem for p in inputs]
    # disambiguate equal stems from different folders
    return [
        out_dir / (f"{n}{ext}" if names.count(n) == 1 else f"{n}_{i}{ext}")
        for i, n in enumerate(names)
    ]

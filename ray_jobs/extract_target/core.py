"""Extract one speaker from a long recording: mixture + enrolment WAV in, target WAV out.

    python -m ray_jobs.extract_target --checkpoint tse.pt --mix MIX.wav --ref REF.wav -o OUT.wav \\
        [--chunk-seconds 4 --overlap-seconds 1] [--batch-size 4] [--device cpu|cuda]

A thin command line over ``models.pipelines.tse.TargetExtractor`` (the reference is
encoded once; the mixture goes through the model in overlapping chunks, cross-faded; pyannote's
sliding-window ``Inference`` is the pattern). Files are decoded and resampled to the model's rate
(48 kHz) by ``datasets.audio``; the output is 16-bit PCM WAV at that rate with the length of the
resampled mixture. The real-time factor (processing time / audio duration, model time only) is
logged and printed as the last stdout line. Unusable input exits 2 with a message.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.audio import AudioError, load_audio, write_audio
from models.pipelines.tse import TargetExtractor
from ray_jobs.cli import configure_cli_logging

log = logging.getLogger("ray_jobs.extract_target.core")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.extract_target",
        description="Target speaker extraction of a (long) mixture given an enrolment recording.",
    )
    p.add_argument("--checkpoint", required=True, help="a voxray TSE checkpoint (.pt)")
    p.add_argument("--mix", required=True, help="the mixture: any length, any rate")
    p.add_argument("--ref", required=True, help="the target speaker alone, >= 0.5 s")
    p.add_argument("-o", "--output", required=True, help="output WAV (48 kHz, 16-bit PCM)")
    p.add_argument("--chunk-seconds", type=float, default=4.0, help="model window length")
    p.add_argument("--overlap-seconds", type=float, default=1.0, help="cross-fade between chunks")
    p.add_argument("--batch-size", type=int, default=4, help="chunks per forward pass")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    return p


def _load(flag: str, path: str) -> tuple[np.ndarray, int]:
    """Decode ``path``; the error names the argument, so the user knows which file to fix."""
    try:
        return load_audio(path)
    except AudioError as exc:
        raise AudioError(f"{flag}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist; give a TSE .pt file")
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"--device {args.device}: no CUDA device here; use --device cpu")
        extractor = TargetExtractor.from_checkpoint(
            ckpt, device=args.device, batch_size=args.batch_size
        )
        if not hasattr(extractor.model, "encode_reference"):
            raise ValueError(f"{ckpt} is not a target speaker extraction checkpoint")
        mix, mix_sr = _load("--mix", args.mix)
        ref, ref_sr = _load("--ref", args.ref)
        t0 = time.perf_counter()
        out = extractor(
            mix,
            mix_sr,
            ref,
            ref_sr,
            chunk_seconds=args.chunk_seconds,
            overlap_seconds=args.overlap_seconds,
        )
        elapsed = time.perf_counter() - t0
    except (FileNotFoundError, ValueError, KeyError) as exc:
        # ValueError covers AudioError, CheckpointError and the chunk/overlap checks
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return 2
    sr = extractor.sample_rate
    write_audio(args.output, out, sr)
    duration = out.shape[0] / sr
    rtf = elapsed / duration
    log.info("wrote %s: %.2f s at %d Hz in %.2f s", args.output, duration, sr, elapsed)
    print(f"real-time factor: {rtf:.3f} ({elapsed:.2f} s for {duration:.2f} s of audio)")
    return 0

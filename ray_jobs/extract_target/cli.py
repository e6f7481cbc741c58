"""Extract one speaker from a long recording: mixture + enrolment WAV in, target WAV out.

    python -m ray_jobs.extract_target --checkpoint tse.pt --mix MIX.wav --ref REF.wav -o OUT.wav \\
        [--chunk-seconds 4 --overlap-seconds 1] [--batch-size 4] [--device cpu|cuda]

The work is ``ray_jobs/extract_target/core.py``'s. The output is 16-bit PCM WAV at the model's
rate with the length of the resampled mixture. The real-time factor (processing time / audio
duration, model time only) is logged and printed as the last stdout line. Unusable input exits 2
with a message.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from datasets.audio import write_audio
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, existing_checkpoint, user_error
from ray_jobs.extract_target.core import extract_files, load_extractor

log = logging.getLogger("ray_jobs.extract_target.cli")


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        ckpt = existing_checkpoint(args.checkpoint, "give a TSE .pt file")
        extractor = load_extractor(ckpt, device=args.device, batch_size=args.batch_size)
        out, elapsed = extract_files(
            extractor,
            args.mix,
            args.ref,
            chunk_seconds=args.chunk_seconds,
            overlap_seconds=args.overlap_seconds,
        )
    except USER_ERRORS as exc:  # AudioError, CheckpointError and the chunk/overlap checks
        return user_error(exc)
    sr = extractor.sample_rate
    write_audio(args.output, out, sr)
    duration = out.shape[0] / sr
    rtf = elapsed / duration
    log.info("wrote %s: %.2f s at %d Hz in %.2f s", args.output, duration, sr, elapsed)
    print(f"real-time factor: {rtf:.3f} ({elapsed:.2f} s for {duration:.2f} s of audio)")
    return 0

"""Same speaker? Two audio files, one model, no Ray cluster and no server.

    python -m ray_jobs.verify a.wav b.wav [--checkpoint PATH|NAME] [--threshold T]
        [--operating-point eer|min_dcf_0.01|min_dcf_0.05] [--device cpu] [--json]

``--checkpoint`` is a voxray checkpoint, an exported ``.onnx`` model, or a published model by
name (``modelscope:iic/...``, ``hf:...``, ``pip:resemblyzer``; ``models.hub``); default
``pip:resemblyzer``, which works offline. Prints the cosine score and the decision (or one JSON
object with ``--json``); the threshold is ``--threshold``, else the model's calibration record
(``python -m ray_jobs.evaluate`` writes it), else 0.5. Exit status 0 whatever the decision, 2 on
a user's error (a missing file, an unreadable recording, an unknown model).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from models.calibration import OPERATING_POINTS
from ray_jobs.cli import (
    USER_ERRORS,
    add_first_touch_arguments,
    configure_cli_logging,
    speaker_embedder,
    user_error,
)
from ray_jobs.verify.core import model_threshold, verify_files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.verify",
        description="Score two recordings with a speaker model and decide: same speaker or not.",
    )
    p.add_argument("a", help="first audio file (wav, flac, ogg, mp3, ...)")
    p.add_argument("b", help="second audio file")
    add_first_touch_arguments(p)
    p.add_argument("--threshold", type=float, help="accept when score >= this (cosine)")
    p.add_argument("--operating-point", default="eer", choices=OPERATING_POINTS,
                   help="which calibrated threshold to use (without --threshold)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        embedder = speaker_embedder(args.checkpoint, device=args.device)
        if args.threshold is not None:
            threshold, source = args.threshold, "--threshold"
        else:
            threshold, source = model_threshold(
                args.checkpoint, embedder.model_id, args.operating_point
            )
        result = verify_files(embedder, args.a, args.b, threshold, source)
    except USER_ERRORS as exc:  # AudioError, HubError, CalibrationError are ValueErrors
        return user_error(exc)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        verdict = "same speaker" if result["same"] else "different speakers"
        print(
            f"score {result['score']:.4f}  {verdict}  (threshold {threshold:.4f}, {source}; "
            f"model {result['model_id']})"
        )
    return 0

"""``make bench``: measure every registered speaker preset and write BENCHMARKS.md.

    uv run python -m ray_jobs.bench [--output BENCHMARKS.md] [--quick] [--families speaker]
                                    [--reference-root PATH] [--threads 2] [--device cpu]
                                    [--no-ray-data] [--no-service]

What is measured and how: ``ray_jobs/bench/report.py``, which assembles the document. Logs on
stderr; ``--device cuda`` without a GPU exits 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ray_jobs.bench.report import SUPPORTED_FAMILIES, run
from ray_jobs.cli import configure_cli_logging


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--quick", action="store_true", help="-tiny presets only, few repeats")
    parser.add_argument(
        "--families",
        default=",".join(SUPPORTED_FAMILIES),
        help="comma-separated: " + ", ".join(SUPPORTED_FAMILIES),
    )
    parser.add_argument("--reference-root", type=Path, default=None, help="3D-Speaker checkout")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-ray-data", action="store_true", help="skip the Ray Data section")
    parser.add_argument(
        "--no-service", action="store_true", help="skip the speaker-service (Ray Serve) section"
    )
    parser.add_argument(
        "--diarization-checkpoint",
        type=Path,
        default=None,
        help="trained speaker checkpoint: adds DER on real excerpts to the diarization section",
    )
    parser.add_argument(
        "--identification-checkpoint",
        type=Path,
        default=None,
        help="trained speaker checkpoint beside its run's val_utterances.csv: adds it, next to "
        "the pretrained GE2E model, to /identify on its held-out speakers (default: "
        "--diarization-checkpoint)",
    )
    args = parser.parse_args(argv)
    configure_cli_logging()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    run(
        args.output,
        quick=args.quick,
        families=[f.strip() for f in args.families.split(",") if f.strip()],
        reference_root=args.reference_root,
        threads=args.threads,
        device=args.device,
        ray_data=not args.no_ray_data,
        service=not args.no_service,
        diarization_checkpoint=args.diarization_checkpoint,
        identification_checkpoint=args.identification_checkpoint or args.diarization_checkpoint,
        argv=argv,
    )
    return 0

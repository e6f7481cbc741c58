"""``make gpu-check``: training-step and extraction throughput and peak memory on one GPU.

    python -m ray_jobs.gpu_check [--output BENCHMARKS.md] [--budget-s 20] [--dry-run]

Without CUDA it logs why and exits 0 (nothing to measure); ``--dry-run`` measures the ``-tiny``
presets on the CPU for one step each and writes to ``--output`` (what the test runs). What is
measured and how: ``ray_jobs/gpu_check/core.py``. Imports no Ray (the GPU image has none).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ray_jobs.cli import configure_cli_logging
from ray_jobs.gpu_check.core import append_section, markdown, run

log = logging.getLogger("ray_jobs.gpu_check.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--budget-s", type=float, default=20.0, help="timed seconds per cell")
    parser.add_argument("--dry-run", action="store_true", help="tiny presets on the CPU")
    args = parser.parse_args(argv)
    configure_cli_logging()
    if not args.dry_run and not torch.cuda.is_available():
        log.warning("gpu-check: no CUDA device on this machine; nothing measured (skipped)")
        return 0
    t0 = time.perf_counter()
    rows = run(dry_run=args.dry_run, budget_s=args.budget_s)
    device = torch.device("cpu" if args.dry_run else "cuda")
    path = append_section(args.output, markdown(rows, device, time.perf_counter() - t0))
    log.info("appended the GPU section to %s", path)
    return 0

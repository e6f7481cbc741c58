"""``python -m ray_jobs.submission <job> <config>``: print a readable submission id."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ray_jobs.submission import submission_id


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.submission",
        description="print a readable submission id for `ray job submit --submission-id`",
    )
    p.add_argument("job", help="the job: train, extract, diarize, sweep, ...")
    p.add_argument("config", help="its config YAML, or a short label (a checkpoint, a preset)")
    args = p.parse_args(argv)
    print(submission_id(args.job, args.config))  # the command's output, for $(...)
    return 0

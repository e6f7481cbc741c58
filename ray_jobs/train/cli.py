"""The one training entry point: ``python -m ray_jobs.train --config CONFIG.yaml``.

    python -m ray_jobs.train --config ray_jobs/configs/campplus.yaml \
        --data-root /data/vox --output runs/campplus [--set optim.lr=3e-4 ...] [--max-minutes 60]
    python -m ray_jobs.train --resume runs/campplus [--set train.epochs=20] [--max-minutes 60]

Loads the experiment (``ray_jobs/train/experiment.py``; flags and ``--set`` override the YAML),
runs it through the Ray adapter ``ray_jobs/train/job.py`` (``--cv``: once per fold) and prints
the report as JSON on stdout; logs go to stderr. Exit status 2 for a bad config or bad data.
``--resume RUN`` continues a stopped run from its latest checkpoint, with the experiment it
recorded (``RUN/experiment.yaml``); see ``ray_jobs/train/resume.py`` for what may change.
"""

from __future__ import annotations

import argparse
import json

from datasets.ray_env import REPO_ROOT
from models.config import ConfigError
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, user_error
from ray_jobs.train.experiment import load_experiment
from ray_jobs.train.job import open_run, run_cross_validation, run_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.train", description=__doc__.split("\n")[0])
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--config", help="experiment YAML (ray_jobs/configs/*.yaml)")
    start.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a stopped run from its latest checkpoint: its --output folder, or its "
        "Ray Train storage folder (path or URI, RUN/ray_results/NAME; then give --output)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by dotted key, e.g. optim.lr=3e-4 (repeatable)",
    )
    p.add_argument("--data-root", help="audio tree or packed shard manifest (sets data.train)")
    p.add_argument(
        "--val-root",
        "--eval-root",  # the earlier name, kept for existing scripts
        dest="val_root",
        help="labelled tree held out of training for the val metrics and report (sets data.val)",
    )
    p.add_argument(
        "--output",
        help="where the run's checkpoints, model.pt, report and logs go: a folder, or a URI "
        "(s3://bucket/prefix, gs://...); required on a multi-node cluster (default runs/<name>)",
    )
    p.add_argument(
        "--max-minutes", type=float, help="wall-clock training budget (train.max_minutes)"
    )
    p.add_argument("--num-workers", type=int, help="Ray Train workers (train.num_workers)")
    p.add_argument(
        "--cv",
        action="store_true",
        help="classify task: one run per predefined fold (k-fold cross-validation)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    flags = {
        "data.train": args.data_root,
        "data.val": args.val_root,
        "train.max_minutes": args.max_minutes,
        "train.num_workers": args.num_workers,
    }
    if args.resume:
        overrides = args.overrides + [f"{k}={v}" for k, v in flags.items() if v is not None]
        try:
            if args.cv:
                raise ConfigError("--cv runs cannot be resumed; resume one fold's folder")
            exp, output, ckpt = open_run(args.resume, overrides, args.output)
            report = run_training(exp, output, resume=True, resume_from=ckpt)
        except USER_ERRORS as exc:
            return user_error(exc)
        print(json.dumps(report, indent=2))
        return 0
    try:
        exp = load_experiment(args.config, args.overrides, flags=flags)
    except USER_ERRORS as exc:  # unknown keys, names or values: ConfigError is a ValueError
        return user_error(exc)
    output = args.output or REPO_ROOT / "runs" / exp.name  # a path or a URI (s3://...)
    try:
        report = run_cross_validation(exp, output) if args.cv else run_training(exp, output)
    except (ValueError, FileNotFoundError) as exc:  # bad data; a KeyError here is a bug
        return user_error(exc)
    print(json.dumps(report, indent=2))
    return 0

"""``python -m ray_jobs.train``: see ``ray_jobs/train/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.train.cli import main

run_main(main)

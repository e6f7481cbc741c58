"""``python -m ray_jobs.train``: see ``ray_jobs/train/job.py``."""

from ray_jobs.cli import run_main
from ray_jobs.train.job import main

run_main(main)

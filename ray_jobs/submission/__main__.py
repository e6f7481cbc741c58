"""``python -m ray_jobs.submission``: see ``ray_jobs/submission/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.submission.cli import main

run_main(main)

"""``python -m ray_jobs.demo``: see ``ray_jobs/demo/job.py``."""

from ray_jobs.cli import run_main
from ray_jobs.demo.job import main

run_main(main)

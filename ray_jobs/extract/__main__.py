"""``python -m ray_jobs.extract``: see ``ray_jobs/extract/job.py``."""

from ray_jobs.cli import run_main
from ray_jobs.extract.job import main

run_main(main)

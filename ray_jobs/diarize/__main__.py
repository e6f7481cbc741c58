"""``python -m ray_jobs.diarize``: see ``ray_jobs/diarize/job.py``."""

from ray_jobs.cli import run_main
from ray_jobs.diarize.job import main

run_main(main)

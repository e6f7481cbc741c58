"""``python -m ray_jobs.diarize``: see ``ray_jobs/diarize/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.diarize.cli import main

run_main(main)

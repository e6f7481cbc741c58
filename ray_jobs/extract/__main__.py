"""``python -m ray_jobs.extract``: see ``ray_jobs/extract/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.extract.cli import main

run_main(main)

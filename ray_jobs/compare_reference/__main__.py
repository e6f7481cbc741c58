"""``python -m ray_jobs.compare_reference``: see ``ray_jobs/compare_reference/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.compare_reference.cli import main

run_main(main)

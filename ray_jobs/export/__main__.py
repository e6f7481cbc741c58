"""``python -m ray_jobs.export``: see ``ray_jobs/export/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.export.cli import main

run_main(main)

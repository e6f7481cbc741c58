"""``python -m ray_jobs.import_checkpoint``: see ``ray_jobs/import_checkpoint/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.import_checkpoint.cli import main

run_main(main)

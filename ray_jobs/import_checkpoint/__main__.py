"""``python -m ray_jobs.import_checkpoint``: see ``ray_jobs/import_checkpoint/core.py``."""

from ray_jobs.cli import run_main
from ray_jobs.import_checkpoint.core import main

run_main(main)

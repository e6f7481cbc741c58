"""``python -m ray_jobs.extract_target``: see ``ray_jobs/extract_target/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.extract_target.cli import main

run_main(main)

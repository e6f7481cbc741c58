"""``python -m ray_jobs.extract_target``: see ``ray_jobs/extract_target/core.py``."""

from ray_jobs.cli import run_main
from ray_jobs.extract_target.core import main

run_main(main)

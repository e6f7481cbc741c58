"""``python -m ray_jobs.verify``: see ``ray_jobs/verify/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.verify.cli import main

run_main(main)

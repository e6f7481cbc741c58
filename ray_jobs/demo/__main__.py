"""``python -m ray_jobs.demo``: see ``ray_jobs/demo/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.demo.cli import main

run_main(main)

"""``python -m ray_jobs.pack``: see ``ray_jobs/pack/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.pack.cli import main

run_main(main)

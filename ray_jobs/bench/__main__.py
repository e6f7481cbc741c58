"""``python -m ray_jobs.bench``: see ``ray_jobs/bench/cli.py``."""

from ray_jobs.bench.cli import main
from ray_jobs.cli import run_main

run_main(main)

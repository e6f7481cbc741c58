"""``python -m ray_jobs.pack``: see ``ray_jobs/pack/core.py``."""

from ray_jobs.cli import run_main
from ray_jobs.pack.core import main

run_main(main)

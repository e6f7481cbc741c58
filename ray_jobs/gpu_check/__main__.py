"""``python -m ray_jobs.gpu_check``: see ``ray_jobs/gpu_check/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.gpu_check.cli import main

run_main(main)

"""``python -m ray_jobs.codec``: see ``ray_jobs/codec/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.codec.cli import main

run_main(main)

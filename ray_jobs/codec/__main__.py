"""``python -m ray_jobs.codec``: see ``ray_jobs/codec/core.py``."""

from ray_jobs.cli import run_main
from ray_jobs.codec.core import main

run_main(main)

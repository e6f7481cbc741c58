"""``python -m ray_jobs.evaluate``: see ``ray_jobs/evaluate/speaker.py``."""

from ray_jobs.cli import run_main
from ray_jobs.evaluate.speaker import main

run_main(main)

"""``python -m ray_jobs.evaluate``: see ``ray_jobs/evaluate/cli/__init__.py``."""

from ray_jobs.cli import run_main
from ray_jobs.evaluate.cli import main

run_main(main)

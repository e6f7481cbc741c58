"""``python -m ray_jobs.embed``: see ``ray_jobs/embed/cli.py``."""

from ray_jobs.cli import run_main
from ray_jobs.embed.cli import main

run_main(main)

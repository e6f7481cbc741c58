"""The jobs: one package per job, each a Ray-free core (``core.py``, or several modules), its thin
Ray adapter (``job.py``, where the job uses Ray), its CLI (``cli.py``: argument parsing, logging
set-up, ``main(argv) -> int``) and ``__main__`` (``run_main(main)``).

``python -m ray_jobs.<job>`` is the entry of every job (see README.md, Architecture); each
package's ``__init__`` names its core, Ray adapter and CLI files. The top-level ``cli.py`` is
what every job's CLI shares (logging, exit 2 on a user's error); ``families.py`` finds a model family's part of a job
by name: ``train/data/<family>.py``, ``evaluate/cli/<family>.py`` (core ``evaluate/<family>.py``)
and ``export/<family>.py``, so a new family edits no dispatcher."""

from __future__ import annotations

from datasets.ray_env import keep_workers_on_this_environment

keep_workers_on_this_environment()  # before any module of this package imports ray

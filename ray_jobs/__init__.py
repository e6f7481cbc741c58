"""The jobs: one package per job, each a Ray-free core, a thin Ray adapter and ``__main__``.

``python -m ray_jobs.<job>`` is the entry of every job (see README.md, Architecture)."""

from __future__ import annotations

from datasets.ray_env import keep_workers_on_this_environment

keep_workers_on_this_environment()  # before any module of this package imports ray

"""Connecting to Ray: the cluster of a submitted job, or a local one started from the repo."""

from __future__ import annotations

import os
from pathlib import Path

import ray

REPO_ROOT = Path(__file__).resolve().parents[1]


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster of a submitted job (RAY_ADDRESS) or start a local one.

    Call it after Ray-free preparation (packing uses a process pool, which should not fork a
    driver that already runs Ray's threads).
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    # A local cluster started from the repository root: workers import models/ datasets/ from it.
    ray.init(
        num_cpus=num_cpus,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        log_to_driver=True,
    )

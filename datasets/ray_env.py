"""Where Ray runs our code: the repository root, the worker environment, the cluster connection.

Ray-free at import (``ray`` is imported inside :func:`init_ray` only), so every entry package
(``ray_jobs``, ``serve``, ``tune``, the tests) calls :func:`keep_workers_on_this_environment`
before anything imports Ray. Shared by ``ray_jobs/`` and ``serve/``, which may not import each
other, so it lives in the lowest layer that both use.
"""

from __future__ import annotations

import os
from pathlib import Path

# The checkout that jobs, Serve replicas and tests run from (top-level packages are not installed).
REPO_ROOT = Path(__file__).resolve().parents[1]

_UV_RUNTIME_ENV = "RAY_ENABLE_UV_RUN_RUNTIME_ENV"


def keep_workers_on_this_environment() -> None:
    """Opt out of Ray's ``uv run`` runtime environment unless the user opted in.

    When a driver runs under ``uv run``, Ray ships the working directory to every worker and
    builds a fresh venv there (tens of seconds per worker, a copy of the repo per job). Local
    clusters and clusters set up from ``cluster.yaml`` already share the locked environment.
    Ray reads the variable when ``ray`` is first imported, so this must run before that; set it
    to 1 to get Ray's behaviour back.
    """
    os.environ.setdefault(_UV_RUNTIME_ENV, "0")


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster of a submitted job (``RAY_ADDRESS``) or start a local one.

    Call it after Ray-free preparation (packing uses a process pool, which should not fork a
    driver that already runs Ray's threads).
    """
    keep_workers_on_this_environment()
    import ray

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

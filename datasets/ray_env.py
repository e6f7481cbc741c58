"""Where Ray runs our code: the repository root and the worker environment (Ray-free).

Every entry package (``ray_jobs``, ``serve``, ``tune``, the tests) calls
:func:`keep_workers_on_this_environment` before anything imports Ray, so this module must not
import it; the cluster connection, ``init_ray``, lives in ``datasets/ray_data.py``. Shared by
``ray_jobs/`` and ``serve/``, which may not import each other.
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

"""See README.md. Importing this package keeps Ray's workers on the current environment."""

from __future__ import annotations

import os

# When a driver runs under `uv run`, Ray ships the working directory to every worker and builds
# a fresh venv there (tens of seconds per worker, and a copy of the repo per job). Local clusters
# and clusters set up from cluster.yaml already share the locked environment, so opt out before
# any module of this package imports ray. Set the variable to 1 to re-enable Ray's behaviour.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def configure_cli_logging() -> None:
    """INFO logs to stderr for a job's ``main`` (stdout stays for its JSON/report output),
    unless the caller (a test, another job) configured logging already."""
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

"""What every job's ``__main__`` shares: logging set-up and the exit on a user's error.

Library code raises; only a CLI turns an error a user can fix into a one-line message and an
exit status, here, the same way for every job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence


def configure_cli_logging(level: int = logging.INFO) -> None:
    """INFO logs to stderr for a job's ``main`` (stdout stays for its JSON/report output),
    unless the caller (a test, another job) configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def run_main(main: Callable[[Sequence[str] | None], int | None]) -> None:
    """``python -m ray_jobs.<job>``: run ``main`` and exit with its status."""
    raise SystemExit(main(None) or 0)

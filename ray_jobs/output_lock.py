"""One job per output folder: a lock file created atomically, with its owner inside.

``extract`` and ``diarize`` write parts, RTTMs and ``failures.json`` into an output folder and
resume from what they find there; two jobs writing into the same folder would interleave parts
and overwrite each other's outputs. :class:`OutputLock` holds ``<output>/.voxray.lock`` for the
job's lifetime:

- it is created with ``O_CREAT | O_EXCL`` (atomic on a local file system and on NFSv3+), holding
  ``{"pid", "host", "started", "command"}``; a second job finds it and is refused with a
  :class:`OutputLockedError` that names the owner;
- a **stale** lock, one left by a job that died without releasing it (``kill -9``, a lost node),
  is taken over only when that is certain: the owner ran on *this* host and its pid is gone.
  The stale file is first renamed to a unique name (only one contender's rename succeeds), then
  the ``O_EXCL`` create is retried once. A lock of another host cannot be checked from here: the
  error says to delete the file by hand once that job is known to be dead;
- it is released (deleted) on exit, error or not, only if it is still ours.

Object-store outputs (``s3://``, ``gs://``) have no atomic exclusive create; they are not locked
(a warning says so): give each such job its own output prefix.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

LOCK_NAME = ".voxray.lock"


class OutputLockedError(RuntimeError):
    """Another job holds the output folder; the message names it and what to do."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class OutputLock:
    """``with OutputLock(output_dir): ...``: refuse a second job on the same output folder."""

    def __init__(self, output: str | Path) -> None:
        self.remote = "://" in str(output) and not str(output).startswith("file://")
        self.dir = Path(str(output).removeprefix("file://"))
        self.path = self.dir / LOCK_NAME
        self.owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(sys.argv)[:500],
        }
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self.owner, fh)
        return True

    def holder(self) -> dict[str, Any]:
        """The current lock file's owner record (``{}`` when unreadable or gone)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _stale(self, owner: dict[str, Any]) -> bool:
        pid = owner.get("pid")
        return owner.get("host") == self.owner["host"] and isinstance(pid, int) and not _alive(pid)

    def acquire(self) -> OutputLock:
        if self.remote:
            log.warning("%s is not a local folder: not locked against a second job", self.dir)
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._create():
            self.held = True
            return self
        owner = self.holder()
        if self._stale(owner):
            aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}.{time.time_ns()}")
            try:
                os.rename(self.path, aside)  # only one contender wins this rename
                os.unlink(aside)
                log.warning("took over the stale lock of dead job %s in %s", owner, self.dir)
            except FileNotFoundError:
                pass  # another contender moved it first; the create below decides
            if self._create():
                self.held = True
                return self
            owner = self.holder()
        raise OutputLockedError(
            f"{self.dir} is in use by another job (pid {owner.get('pid')} on "
            f"{owner.get('host')}, started {owner.get('started')}: {owner.get('command')!r}); "
            f"wait for it, or use another output folder. If that job is dead (e.g. on another "
            f"machine), delete {self.path} and rerun: this run resumes from its outputs"
        )

    def release(self) -> None:
        if self.held and self.holder() == self.owner:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

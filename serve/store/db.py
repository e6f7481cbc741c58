"""The enrollment database file: SQLite schema, its version check, and write transactions.

Layout (``SCHEMA_VERSION`` 1)::

    schema_version(version)                         one row
    meta(id=1, model_id, embed_dim, version)        one row: the bound model and the write counter
    speakers(id, name, model_id, embed_dim, created_at, metadata JSON, centroid BLOB, num_embeddings)
    embeddings(id, speaker_id -> speakers ON DELETE CASCADE, vector BLOB float32, created_at)
    groups(name, created_at)
    memberships(speaker_id -> speakers, group_name -> groups, both ON DELETE CASCADE)
    stats(id=1, num_speakers)                       one row, kept by triggers on speakers
    settings(key, value JSON)                       the service configuration (serve/store/settings.py)

``stats`` and ``settings`` are additive (created, and ``stats`` filled by one count, when an older
file is opened), so they need no schema version bump. ``stats.num_speakers`` makes the speaker
count O(1) for ``/health``: SQLite's ``COUNT(*)`` walks the whole table.

Consistency across processes: SQLite in WAL mode (readers never block the writer), every write in
a ``BEGIN IMMEDIATE`` transaction (checks and writes together: a check never sees state that
another writer changes before the commit) (retried on ``database is locked`` beyond the busy timeout) that
also bumps ``meta.version``, which readers of derived state (the centroid index,
``serve/store/index.py``) compare to know when to reload. A file of another schema version is
refused rather than migrated: there is one version so far.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

SCHEMA_VERSION = 1

T = TypeVar("T")


class StoreError(ValueError):
    """A request the enrollment database cannot honour; the message says what to do."""


class UnknownSpeakerError(StoreError):
    """No speaker with this id."""


class UnknownGroupError(StoreError):
    """No group with this name."""


class ModelMismatchError(StoreError):
    """Embeddings of another model id, or of another dimension, than the store is bound to."""


class MetadataTooLargeError(StoreError):
    """A speaker's metadata JSON is over the store's byte limit."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    model_id TEXT,
    embed_dim INTEGER,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS speakers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embed_dim INTEGER NOT NULL,
    created_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    centroid BLOB NOT NULL,
    num_embeddings INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    speaker_id TEXT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    vector BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_speaker ON embeddings(speaker_id);
CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS memberships (
    speaker_id TEXT NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE,
    PRIMARY KEY (speaker_id, group_name)
);
CREATE INDEX IF NOT EXISTS memberships_group ON memberships(group_name);
CREATE TABLE IF NOT EXISTS stats (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    num_speakers INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS speakers_count_insert AFTER INSERT ON speakers
    BEGIN UPDATE stats SET num_speakers = num_speakers + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS speakers_count_delete AFTER DELETE ON speakers
    BEGIN UPDATE stats SET num_speakers = num_speakers - 1 WHERE id = 1; END;
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Database:
    """One SQLite connection to the enrollment file; thread-safe (one lock), multi-process safe.

    ``busy_timeout`` (s) is how long SQLite waits for another writer; ``max_write_seconds`` caps
    the retries beyond it.
    """

    def __init__(
        self, path: str | os.PathLike, *, busy_timeout: float = 5.0, max_write_seconds: float = 60.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_write_seconds = float(max_write_seconds)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        self._conn.execute("PRAGMA foreign_keys = ON")
        # FULL: every COMMIT fsyncs the WAL before it returns, so an acknowledged enrollment
        # survives a power cut or OS crash too. (NORMAL in WAL mode survives a killed process,
        # `kill -9`, but may roll back the last commits on power loss.) Costs one fsync per
        # write transaction; enrollments are rare next to reads.
        self._conn.execute("PRAGMA synchronous = FULL")
        self._create_schema()

    def _retry(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self._max_write_seconds
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc)
                if "locked" not in msg and "busy" not in msg or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction that bumps ``meta.version``; rolled back on error."""
        with self._lock:
            self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self._conn
                self._conn.execute("UPDATE meta SET version = version + 1 WHERE id = 1")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of one read statement, under the connection's lock (for tables kept beside
        the speaker tables, such as the legacy modes'); writes go through ``transaction()``."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _create_schema(self) -> None:
        with self._lock:
            self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                for stmt in re.split(r";\s*\n", _SCHEMA):  # a trigger's inner ";" is mid-line
                    if stmt.strip():
                        self._conn.execute(stmt)
                row = self._conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} has schema version {row[0]}; this code reads version "
                        f"{SCHEMA_VERSION}: upgrade voxray or use another database file"
                    )
                self._conn.execute("INSERT OR IGNORE INTO meta (id, version) VALUES (1, 0)")
                self._conn.execute(  # a file of before the stats table: one count, once
                    "INSERT OR IGNORE INTO stats (id, num_speakers) "
                    "SELECT 1, COUNT(*) FROM speakers"
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _meta(self) -> tuple[str | None, int | None, int]:
        with self._lock:
            row = self._conn.execute("SELECT model_id, embed_dim, version FROM meta").fetchone()
        return row[0], row[1], int(row[2])

    def _num_speakers(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT num_speakers FROM stats").fetchone()[0])

    @property
    def num_speakers(self) -> int:
        """How many speakers the file holds: O(1) (the ``stats`` row, kept by triggers)."""
        return self._num_speakers()

    # -- settings: the service configuration, durable with the enrollments -------------------
    def settings(self) -> dict[str, Any]:
        """``key -> value`` of the ``settings`` table (JSON values; empty for a new file)."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM settings").fetchall()
        return {k: json.loads(v) for k, v in rows}

    @staticmethod
    def _put_settings(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
        """Write ``values`` inside the caller's write transaction."""
        conn.executemany(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v)) for k, v in values.items()],
        )

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Set ``values`` (one transaction) and return every setting."""
        with self.transaction() as conn:
            self._put_settings(conn, values)
        return self.settings()

    @property
    def model_id(self) -> str | None:
        """The model the stored embeddings come from (None before the first write)."""
        return self._meta()[0]

    @property
    def embed_dim(self) -> int | None:
        return self._meta()[1]

    @property
    def version(self) -> int:
        """Write counter: bumped by every write transaction of any connection."""
        return self._meta()[2]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

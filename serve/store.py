"""The enrollment database: speakers, their embeddings and groups in one SQLite file.

Ray-free (plain ``sqlite3`` + numpy) so it is tested without a cluster; ``serve/app.py`` holds
one ``SpeakerStore`` per replica, and several replicas (processes) may share the file.

Layout (``SCHEMA_VERSION`` 1)::

    schema_version(version)                         one row
    meta(id=1, model_id, embed_dim, version)        one row: the bound model and the write counter
    speakers(id, name, model_id, embed_dim, created_at, metadata JSON, centroid BLOB, num_embeddings)
    embeddings(id, speaker_id -> speakers ON DELETE CASCADE, vector BLOB float32, created_at)
    groups(name, created_at)
    memberships(speaker_id -> speakers, group_name -> groups, both ON DELETE CASCADE)

Consistency across processes: SQLite in WAL mode (readers never block the writer), every write in
a ``BEGIN IMMEDIATE`` transaction (retried on ``database is locked`` beyond the busy timeout) that
also bumps ``meta.version``. Identification searches an in-memory matrix of normalised centroids;
before each search the store reads ``meta.version`` (one row, ~10 us) and reloads the matrix when
any connection (this one, another ``SpeakerStore``, another process) has written since.

Scores are cosine similarities of L2-normalised embeddings, as in 3D-Speaker and WeSpeaker; a
speaker's centroid is the mean of its L2-normalised utterance embeddings, re-normalised.

The store is bound to one ``(model_id, embed_dim)``: embeddings of another model live in another
space, so mixing them is refused with ``ModelMismatchError``. The binding is recorded on the first
write; while the store holds no speaker (all deleted), a write with another model re-binds it.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

SCHEMA_VERSION = 1
DEFAULT_GROUP = "default"
UNKNOWN = "unknown"
# Score reported for "unknown" when the searched gallery is empty: the minimum cosine.
EMPTY_GALLERY_SCORE = -1.0

T = TypeVar("T")


class StoreError(ValueError):
    """A request the enrollment database cannot honour; the message says what to do."""


class UnknownSpeakerError(StoreError):
    """No speaker with this id."""


class UnknownGroupError(StoreError):
    """No group with this name."""


class ModelMismatchError(StoreError):
    """Embeddings of another model id, or of another dimension, than the store is bound to."""


@dataclass(frozen=True)
class Speaker:
    id: str  # uuid4 hex
    name: str
    groups: tuple[str, ...]  # sorted
    num_embeddings: int
    model_id: str
    embed_dim: int
    created_at: float  # unix seconds
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Match:
    speaker_id: str | None  # None for "unknown"
    name: str  # "unknown" when the best score is below the threshold
    score: float  # cosine similarity in [-1, 1]


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
"""


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centroid(embeddings: np.ndarray) -> np.ndarray:
    """``(N, D)`` -> ``(D,)`` float32: mean of the L2-normalised rows, re-normalised."""
    mean = _normalise_rows(embeddings).mean(axis=0)
    return _normalise_rows(mean[None])[0].astype(np.float32)


@dataclass
class _Index:
    """Normalised centroids of every speaker, plus row indices per group."""

    version: int = -1
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    groups: dict[str, np.ndarray] = field(default_factory=dict)


class SpeakerStore:
    """Speakers, embeddings and groups in one SQLite file; thread-safe, multi-process safe.

    ``model_id``/``embed_dim`` (optional) state the model the caller will write with: opening a
    store bound to another model raises ``ModelMismatchError`` at once. ``busy_timeout`` (s) is
    how long SQLite waits for another writer; ``max_write_seconds`` caps the retries beyond it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        model_id: str | None = None,
        embed_dim: int | None = None,
        busy_timeout: float = 5.0,
        max_write_seconds: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._expect_model_id = model_id
        self._expect_dim = None if embed_dim is None else int(embed_dim)
        self._max_write_seconds = float(max_write_seconds)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # durable in WAL mode up to a power cut
        self._index = _Index()
        self._create_schema()
        held_model, held_dim = self._meta()[:2]
        if self._num_speakers() and (
            (model_id is not None and held_model != model_id)
            or (embed_dim is not None and held_dim != int(embed_dim))
        ):
            raise ModelMismatchError(
                f"{self.path} holds embeddings of model {held_model} (dim {held_dim}), not of "
                f"{model_id} (dim {embed_dim}); use another database file for this model"
            )

    # -- plumbing ----------------------------------------------------------------------------
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
    def _write(self) -> Iterator[sqlite3.Connection]:
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

    def _create_schema(self) -> None:
        with self._lock:
            self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                for stmt in _SCHEMA.split(";"):
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
            return int(self._conn.execute("SELECT COUNT(*) FROM speakers").fetchone()[0])

    # -- properties --------------------------------------------------------------------------
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

    # -- model binding -----------------------------------------------------------------------
    def _bind(self, conn: sqlite3.Connection, model_id: str, dim: int) -> None:
        """Check (inside the write transaction) that ``model_id``/``dim`` match the binding."""
        if not model_id:
            raise StoreError("model_id is required: the model id of the embedder that made them")
        for want, got, what in (
            (self._expect_model_id, model_id, "model"),
            (self._expect_dim, dim, "dimension"),
        ):
            if want is not None and want != got:
                raise ModelMismatchError(
                    f"this store was opened for {what} {want!r} but got {got!r}; "
                    "open it with the model you write with"
                )
        held_model, held_dim = conn.execute("SELECT model_id, embed_dim FROM meta").fetchone()
        empty = conn.execute("SELECT COUNT(*) FROM speakers").fetchone()[0] == 0
        if held_model is None or empty:
            conn.execute(
                "UPDATE meta SET model_id = ?, embed_dim = ? WHERE id = 1", (model_id, dim)
            )
        elif held_model != model_id or held_dim != dim:
            raise ModelMismatchError(
                f"{self.path} holds {held_dim}-dim embeddings of model {held_model}; got "
                f"{dim}-dim embeddings of {model_id}. Embeddings of different models are not "
                "comparable: use the same model, or another database file"
            )

    @staticmethod
    def _as_matrix(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise StoreError(f"{what} must be a non-empty (N, D) array, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise StoreError(f"{what} contain NaN or infinite values")
        if (np.linalg.norm(x, axis=1) == 0).any():
            raise StoreError(f"{what} contain an all-zero row, which has no direction")
        return x

    # -- writes ------------------------------------------------------------------------------
    def _ensure_groups(self, conn: sqlite3.Connection, groups: Sequence[str]) -> tuple[str, ...]:
        if isinstance(groups, str):
            groups = (groups,)
        clean = tuple(dict.fromkeys(str(g).strip() for g in groups))
        if not clean or any(not g for g in clean):
            raise StoreError(f"groups must be non-empty names, got {list(groups)!r}")
        now = time.time()
        conn.executemany(
            "INSERT OR IGNORE INTO groups (name, created_at) VALUES (?, ?)",
            [(g, now) for g in clean],
        )
        return clean

    def _insert_speaker(
        self,
        conn: sqlite3.Connection,
        name: str,
        x: np.ndarray,
        groups: tuple[str, ...],
        model_id: str,
        metadata: dict | None,
        speaker_id: str | None = None,
    ) -> str:
        sid = speaker_id or uuid.uuid4().hex
        now = time.time()
        try:
            meta_json = json.dumps(dict(metadata or {}))
        except TypeError as exc:
            raise StoreError(f"metadata must be JSON-serialisable: {exc}") from exc
        conn.execute(
            "INSERT INTO speakers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, name, model_id, x.shape[1], now, meta_json, centroid(x).tobytes(), len(x)),
        )
        conn.executemany(
            "INSERT INTO embeddings (speaker_id, vector, created_at) VALUES (?, ?, ?)",
            [(sid, row.tobytes(), now) for row in x],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO memberships VALUES (?, ?)", [(sid, g) for g in groups]
        )
        return sid

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        groups: Sequence[str] = (DEFAULT_GROUP,),
        model_id: str,
        metadata: dict | None = None,
        speaker_id: str | None = None,
    ) -> Speaker:
        """Enroll ``embeddings: (N, D)`` (one row per utterance; ``(D,)`` is one utterance).

        New speaker: a uuid4 id, member of ``groups`` (created if missing). With ``speaker_id``
        of an existing speaker: re-enrollment, the rows are added to that speaker, its centroid
        is recomputed over all its rows, ``groups`` are added to its groups and ``metadata`` is
        merged into its metadata (``name`` is kept). An unknown ``speaker_id`` creates a new
        speaker under that id. Raises ``ModelMismatchError`` for another model or dimension.
        """
        x = self._as_matrix(embeddings)
        if not str(name).strip():
            raise StoreError("name must be a non-empty string")
        with self._write() as conn:
            self._bind(conn, model_id, x.shape[1])
            groups = self._ensure_groups(conn, groups)
            row = None
            if speaker_id is not None:
                row = conn.execute(
                    "SELECT metadata FROM speakers WHERE id = ?", (speaker_id,)
                ).fetchone()
            if row is None:
                sid = self._insert_speaker(
                    conn, str(name), x, groups, model_id, metadata, speaker_id
                )
            else:
                sid = speaker_id
                now = time.time()
                conn.executemany(
                    "INSERT INTO embeddings (speaker_id, vector, created_at) VALUES (?, ?, ?)",
                    [(sid, r.tobytes(), now) for r in x],
                )
                rows = conn.execute(
                    "SELECT vector FROM embeddings WHERE speaker_id = ?", (sid,)
                ).fetchall()
                allx = np.stack([np.frombuffer(r[0], np.float32) for r in rows])
                merged = {**json.loads(row[0]), **dict(metadata or {})}
                conn.execute(
                    "UPDATE speakers SET centroid = ?, num_embeddings = ?, metadata = ? "
                    "WHERE id = ?",
                    (centroid(allx).tobytes(), len(allx), json.dumps(merged), sid),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO memberships VALUES (?, ?)", [(sid, g) for g in groups]
                )
            return self._get(conn, sid)

    def add_to_group(self, speaker_id: str, group: str) -> Speaker:
        """Add a speaker to ``group`` (created if missing); idempotent."""
        with self._write() as conn:
            self._get(conn, speaker_id)
            (group,) = self._ensure_groups(conn, (group,))
            conn.execute("INSERT OR IGNORE INTO memberships VALUES (?, ?)", (speaker_id, group))
            return self._get(conn, speaker_id)

    def remove_from_group(self, speaker_id: str, group: str) -> Speaker:
        """Remove a speaker from ``group``; a no-op if it is not a member. The group stays
        (possibly empty) until ``delete_group``. Unknown group -> ``UnknownGroupError``."""
        with self._write() as conn:
            self._get(conn, speaker_id)
            self._check_group(conn, group)
            conn.execute(
                "DELETE FROM memberships WHERE speaker_id = ? AND group_name = ?",
                (speaker_id, group),
            )
            return self._get(conn, speaker_id)

    def delete(self, speaker_id: str) -> None:
        """Delete a speaker, its embeddings and its memberships."""
        with self._write() as conn:
            if conn.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,)).rowcount == 0:
                raise UnknownSpeakerError(
                    f"no speaker {speaker_id!r}; list them with list_speakers()"
                )

    def create_group(self, group: str) -> None:
        """Create an empty group (idempotent)."""
        with self._write() as conn:
            self._ensure_groups(conn, (group,))

    def delete_group(self, group: str) -> None:
        """Delete a group (its speakers stay, in their other groups)."""
        with self._write() as conn:
            self._check_group(conn, group)
            conn.execute("DELETE FROM groups WHERE name = ?", (group,))

    def import_gallery(
        self, labels: Sequence[str], embeddings: np.ndarray, *, group: str, model_id: str
    ) -> list[Speaker]:
        """A custom gallery: ``labels[i]`` names row ``i`` of ``embeddings: (N, D)``.

        Rows sharing a label are one speaker (centroid over them); speakers are returned in
        order of first appearance. All or nothing: one transaction. Every import creates new
        speakers (names need not be unique); import into a fresh group to keep galleries apart.
        """
        x = self._as_matrix(embeddings)
        labels = [str(label) for label in labels]
        if len(labels) != len(x):
            raise StoreError(f"{len(labels)} labels for {len(x)} embeddings; give one per row")
        if any(not label.strip() for label in labels):
            raise StoreError("labels must be non-empty strings")
        rows: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            rows.setdefault(label, []).append(i)
        with self._write() as conn:
            self._bind(conn, model_id, x.shape[1])
            groups = self._ensure_groups(conn, (group,))
            ids = [
                self._insert_speaker(conn, label, x[idx], groups, model_id, {"source": "gallery"})
                for label, idx in rows.items()
            ]
            return [self._get(conn, sid) for sid in ids]

    def import_speakers_parquet(
        self, path: str | os.PathLike, *, group: str, model_id: str
    ) -> list[Speaker]:
        """Enroll every row of an extraction job's ``speakers.parquet`` into ``group``.

        Columns: ``key, dataset, speaker_id, num_utterances, embedding (list<float32>)``; each
        row is one speaker whose stored embedding is the row's (centroid) embedding, named
        ``speaker_id``, with ``metadata = {dataset, key, num_utterances, source}``. One
        transaction: a bad file enrolls nobody.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path} does not exist")
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise StoreError(f"{path} is not a readable parquet file: {exc}") from exc
        need = {"key", "dataset", "speaker_id", "num_utterances", "embedding"}
        missing = need - set(table.column_names)
        if missing:
            raise StoreError(
                f"{path} lacks columns {sorted(missing)}; expected the speakers.parquet "
                "written by ray_jobs/extract.py"
            )
        data = table.select(sorted(need)).to_pydict()
        if not data["embedding"]:
            return []
        try:
            arr = np.array(data["embedding"], dtype=np.float32)
        except (ValueError, TypeError) as exc:  # ragged or null rows
            raise StoreError(f"{path}: embeddings are not equal-length vectors: {exc}") from exc
        x = self._as_matrix(arr, f"{path} embeddings")
        with self._write() as conn:
            self._bind(conn, model_id, x.shape[1])
            groups = self._ensure_groups(conn, (group,))
            ids = []
            for i in range(len(x)):
                meta = {
                    "dataset": data["dataset"][i],
                    "key": data["key"][i],
                    "num_utterances": data["num_utterances"][i],
                    "source": str(path),
                }
                ids.append(
                    self._insert_speaker(
                        conn, str(data["speaker_id"][i]), x[i : i + 1], groups, model_id, meta
                    )
                )
            return [self._get(conn, sid) for sid in ids]

    # -- reads -------------------------------------------------------------------------------
    @staticmethod
    def _check_group(conn: sqlite3.Connection, group: str) -> None:
        if conn.execute("SELECT 1 FROM groups WHERE name = ?", (group,)).fetchone() is None:
            raise UnknownGroupError(f"no group {group!r}; list_groups() lists them")

    def _speakers(self, conn: sqlite3.Connection, where: str, args: tuple) -> list[Speaker]:
        rows = conn.execute(
            "SELECT s.id, s.name, s.num_embeddings, s.model_id, s.embed_dim, s.created_at, "
            "s.metadata, (SELECT group_concat(group_name, char(31)) FROM "
            "(SELECT group_name FROM memberships m WHERE m.speaker_id = s.id "
            "ORDER BY group_name)) "
            f"FROM speakers s {where} ORDER BY s.created_at, s.rowid",
            args,
        ).fetchall()
        return [
            Speaker(
                id=r[0],
                name=r[1],
                groups=tuple(r[7].split("\x1f")) if r[7] else (),
                num_embeddings=int(r[2]),
                model_id=r[3],
                embed_dim=int(r[4]),
                created_at=float(r[5]),
                metadata=json.loads(r[6]),
            )
            for r in rows
        ]

    def _get(self, conn: sqlite3.Connection, speaker_id: str) -> Speaker:
        found = self._speakers(conn, "WHERE s.id = ?", (speaker_id,))
        if not found:
            raise UnknownSpeakerError(f"no speaker {speaker_id!r}; list them with list_speakers()")
        return found[0]

    def get(self, speaker_id: str) -> Speaker:
        with self._lock:
            return self._get(self._conn, speaker_id)

    def list_speakers(self, group: str | None = None) -> list[Speaker]:
        """All speakers (oldest first), or the members of ``group``."""
        with self._lock:
            if group is None:
                return self._speakers(self._conn, "", ())
            self._check_group(self._conn, group)
            return self._speakers(
                self._conn,
                "WHERE s.id IN (SELECT speaker_id FROM memberships WHERE group_name = ?)",
                (group,),
            )

    def list_groups(self) -> list[dict]:
        """``[{"name", "num_speakers"}]`` sorted by name, empty groups included."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT g.name, COUNT(m.speaker_id) FROM groups g LEFT JOIN memberships m "
                "ON m.group_name = g.name GROUP BY g.name ORDER BY g.name"
            ).fetchall()
        return [{"name": r[0], "num_speakers": int(r[1])} for r in rows]

    def embeddings(self, speaker_id: str) -> np.ndarray:
        """The stored utterance embeddings of a speaker, ``(N, D)`` float32."""
        with self._lock:
            self._get(self._conn, speaker_id)
            rows = self._conn.execute(
                "SELECT vector FROM embeddings WHERE speaker_id = ? ORDER BY id", (speaker_id,)
            ).fetchall()
        return np.stack([np.frombuffer(r[0], np.float32) for r in rows])

    # -- identification ----------------------------------------------------------------------
    def _fresh_index(self) -> _Index:
        """The centroid matrix, reloaded if any connection wrote since it was built."""
        with self._lock:
            version = self._meta()[2]
            if version == self._index.version:
                return self._index
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot for the version, speakers and memberships
            try:
                version = int(conn.execute("SELECT version FROM meta").fetchone()[0])
                rows = conn.execute(
                    "SELECT id, name, centroid FROM speakers ORDER BY created_at, rowid"
                ).fetchall()
                members = conn.execute("SELECT speaker_id, group_name FROM memberships").fetchall()
                group_names = [r[0] for r in conn.execute("SELECT name FROM groups")]
            finally:
                conn.execute("COMMIT")
            ids = [r[0] for r in rows]
            dim = self._meta()[1] or 0
            matrix = (
                np.stack([np.frombuffer(r[2], np.float32) for r in rows])
                if rows
                else np.zeros((0, dim), np.float32)
            )
            pos = {sid: i for i, sid in enumerate(ids)}
            by_group: dict[str, list[int]] = {g: [] for g in group_names}
            for sid, g in members:
                by_group.setdefault(g, []).append(pos[sid])
            self._index = _Index(
                version=version,
                ids=ids,
                names=[r[1] for r in rows],
                matrix=np.ascontiguousarray(matrix),
                groups={g: np.array(sorted(v), dtype=np.int64) for g, v in by_group.items()},
            )
            return self._index

    def identify(
        self,
        embedding: np.ndarray,
        *,
        group: str | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
    ) -> list[Match]:
        """Open-set identification of one ``embedding: (D,)`` against the speaker centroids.

        Searches every speaker, or the members of ``group`` (unknown -> ``UnknownGroupError``).
        Returns the ``top_k`` best speakers by cosine score, best first (ties: older speaker
        first). Open set: if the best score is below ``threshold`` (or the gallery is empty),
        the list starts with ``Match(None, "unknown", best_score)`` followed by those same
        candidates, so it has up to ``top_k + 1`` entries; an empty gallery gives just
        ``[Match(None, "unknown", -1.0)]``. When the best score is at least ``threshold`` the
        first entry is the identified speaker; later candidates may score below ``threshold``.
        """
        return self.identify_batch(
            np.asarray(embedding)[None], group=group, top_k=top_k, threshold=threshold
        )[0]

    def identify_batch(
        self,
        embeddings: np.ndarray,
        *,
        group: str | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
    ) -> list[list[Match]]:
        """``identify`` for each row of ``embeddings: (B, D)`` with one matrix product."""
        q = np.asarray(embeddings, dtype=np.float32)
        if q.ndim != 2 or q.shape[0] == 0:
            raise StoreError(f"expected (B, D) embeddings, got shape {q.shape}")
        if not np.isfinite(q).all():
            raise StoreError("embeddings contain NaN or infinite values")
        if top_k < 1:
            raise StoreError(f"top_k must be >= 1, got {top_k}")
        index = self._fresh_index()
        model_id, dim = self._meta()[:2]
        if dim is not None and q.shape[1] != dim:
            raise ModelMismatchError(
                f"got {q.shape[1]}-dim embeddings; this store holds {dim}-dim embeddings of "
                f"model {model_id}"
            )
        if group is None:
            rows = None
        elif group in index.groups:
            rows = index.groups[group]
        else:
            raise UnknownGroupError(f"no group {group!r}; list_groups() lists them")
        matrix = index.matrix if rows is None else index.matrix[rows]
        if matrix.shape[0] == 0:  # empty gallery: nothing to compare with
            return [[Match(None, UNKNOWN, EMPTY_GALLERY_SCORE)] for _ in q]
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores = q @ matrix.T  # (B, N)
        k = min(int(top_k), scores.shape[1])
        out = []
        for s in scores:
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            top = top[np.lexsort((top, -s[top]))]  # score descending, then row ascending
            cand = []
            for j in top:
                r = int(j) if rows is None else int(rows[j])
                cand.append(Match(index.ids[r], index.names[r], float(s[j])))
            if cand[0].score < threshold:
                cand.insert(0, Match(None, UNKNOWN, cand[0].score))
            out.append(cand)
        return out

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpeakerStore({str(self.path)!r}, model_id={self.model_id!r})"

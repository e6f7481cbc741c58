"""Speaker CRUD of the enrollment database: enroll, groups, imports, reads, identification.

Ray-free (plain ``sqlite3`` + numpy) so it is tested without a cluster; the Serve ingress
(``serve/context.py``) holds one ``SpeakerStore`` per replica, and several replicas (processes)
may share the file. The file itself (schema, WAL, write transactions) is ``serve/store/db.py``;
identification searches the in-memory centroid index of ``serve/store/index.py``, reloaded
before a search when ``meta.version`` shows that any connection has written since.

Scores are cosine similarities and a speaker's centroid is the mean of its L2-normalised
utterance embeddings, re-normalised (``models.pipelines.scoring``).

The store is bound to one ``(model_id, embed_dim)``: embeddings of another model live in another
space, so mixing them is refused with ``ModelMismatchError``. The binding is recorded on the first
write; while the store holds no speaker (all deleted), a write with another model re-binds it.
When a service records its active model (``activate_model``, the ``settings`` table), a write
with embeddings of any other model is refused too, in the same transaction: a model switch and
the enrollments that ran across it are serialised, whichever commits first wins and the other
gets ``ModelMismatchError``, so the store never ends up bound to a model that is not active.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.pipelines.scoring import centroid
from serve.store.db import (
    Database,
    MetadataTooLargeError,
    ModelMismatchError,
    StoreError,
    UnknownGroupError,
    UnknownSpeakerError,
)
from serve.store.index import CentroidIndex, Match

DEFAULT_GROUP = "default"


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


def as_embedding_matrix(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """``embeddings`` as a float32 ``(N, D)`` matrix: one row or many, finite, no all-zero row
    (which has no direction); ``StoreError`` naming ``what`` otherwise."""
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


class SpeakerStore(Database):
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
        max_metadata_bytes: int | None = None,
    ) -> None:
        super().__init__(path, busy_timeout=busy_timeout, max_write_seconds=max_write_seconds)
        self._max_metadata_bytes = max_metadata_bytes
        self._expect_model_id = model_id
        self._expect_dim = None if embed_dim is None else int(embed_dim)
        self._index = CentroidIndex()
        held_model, held_dim = self._meta()[:2]
        if self._num_speakers() and (
            (model_id is not None and held_model != model_id)
            or (embed_dim is not None and held_dim != int(embed_dim))
        ):
            raise ModelMismatchError(
                f"{self.path} holds embeddings of model {held_model} (dim {held_dim}), not of "
                f"{model_id} (dim {embed_dim}); use another database file for this model"
            )

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
        active = conn.execute("SELECT value FROM settings WHERE key = 'model_id'").fetchone()
        if active is not None and json.loads(active[0]) not in (None, model_id):
            raise ModelMismatchError(
                f"the active model is now {json.loads(active[0])}, not {model_id} that made "
                "these embeddings (the model was switched while this request ran); send it again"
            )
        held_model, held_dim = conn.execute("SELECT model_id, embed_dim FROM meta").fetchone()
        empty = conn.execute("SELECT num_speakers FROM stats").fetchone()[0] == 0
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

    def activate_model(self, name: str, model_id: str, *, check: bool = True) -> None:
        """Record ``name``/``model_id`` as the service's active model (``settings``); writes of
        another model's embeddings are refused from then on. With ``check``, refuse
        (``ModelMismatchError``) when the store holds speakers of another model; the check and
        the record are one transaction, so no enrollment commits between them."""
        with self.transaction() as conn:
            held = conn.execute("SELECT model_id FROM meta").fetchone()[0]
            count = conn.execute("SELECT num_speakers FROM stats").fetchone()[0]
            if check and held is not None and held != model_id and count:
                raise ModelMismatchError(
                    f"the enrollment database {self.path.name} holds embeddings of model {held}, "
                    f"not of {model_id}; switch back or use another database file"
                )
            self._put_settings(conn, {"model": name, "model_id": model_id})

    def _metadata_json(self, metadata: dict | None) -> str:
        try:
            text = json.dumps(dict(metadata or {}))
        except (TypeError, ValueError) as exc:
            raise StoreError(f"metadata must be JSON-serialisable: {exc}") from exc
        limit = self._max_metadata_bytes
        if limit is not None and len(text.encode()) > limit:
            raise MetadataTooLargeError(
                f"metadata is {len(text.encode())} bytes of JSON; at most {limit} per speaker"
            )
        return text

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
    ) -> str:
        sid = uuid.uuid4().hex
        now = time.time()
        meta_json = self._metadata_json(metadata)
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

        New speaker: a uuid4 id, member of ``groups`` (created if missing). With ``speaker_id``:
        re-enrollment, the rows are added to that speaker, its centroid is recomputed over all
        its rows, ``groups`` are added to its groups and ``metadata`` is merged into its
        metadata (``name`` is kept). The speaker must exist when the write commits (checked in
        the write transaction): a speaker deleted while its re-enrollment was being embedded
        stays deleted and the re-enrollment gets ``UnknownSpeakerError``. Raises
        ``ModelMismatchError`` for another model or dimension, ``MetadataTooLargeError`` when
        the (merged) metadata is over the limit.
        """
        x = as_embedding_matrix(embeddings)
        if not str(name).strip():
            raise StoreError("name must be a non-empty string")
        with self.transaction() as conn:
            self._bind(conn, model_id, x.shape[1])
            groups = self._ensure_groups(conn, groups)
            row = None
            if speaker_id is not None:
                row = conn.execute(
                    "SELECT metadata FROM speakers WHERE id = ?", (speaker_id,)
                ).fetchone()
                if row is None:
                    raise UnknownSpeakerError(
                        f"no speaker {speaker_id!r} (deleted?); enroll it anew without speaker_id"
                    )
            if row is None:
                sid = self._insert_speaker(conn, str(name), x, groups, model_id, metadata)
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
                    (centroid(allx).tobytes(), len(allx), self._metadata_json(merged), sid),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO memberships VALUES (?, ?)", [(sid, g) for g in groups]
                )
            return self._get(conn, sid)

    def add_to_group(self, speaker_id: str, group: str) -> Speaker:
        """Add a speaker to ``group`` (created if missing); idempotent."""
        with self.transaction() as conn:
            self._get(conn, speaker_id)
            (group,) = self._ensure_groups(conn, (group,))
            conn.execute("INSERT OR IGNORE INTO memberships VALUES (?, ?)", (speaker_id, group))
            return self._get(conn, speaker_id)

    def remove_from_group(self, speaker_id: str, group: str) -> Speaker:
        """Remove a speaker from ``group``; a no-op if it is not a member. The group stays
        (possibly empty) until ``delete_group``. Unknown group -> ``UnknownGroupError``."""
        with self.transaction() as conn:
            self._get(conn, speaker_id)
            self._check_group(conn, group)
            conn.execute(
                "DELETE FROM memberships WHERE speaker_id = ? AND group_name = ?",
                (speaker_id, group),
            )
            return self._get(conn, speaker_id)

    def delete(self, speaker_id: str) -> None:
        """Delete a speaker, its embeddings and its memberships."""
        with self.transaction() as conn:
            if conn.execute("DELETE FROM speakers WHERE id = ?", (speaker_id,)).rowcount == 0:
                raise UnknownSpeakerError(
                    f"no speaker {speaker_id!r}; list them with list_speakers()"
                )

    def create_group(self, group: str) -> None:
        """Create an empty group (idempotent)."""
        with self.transaction() as conn:
            self._ensure_groups(conn, (group,))

    def delete_group(self, group: str) -> None:
        """Delete a group (its speakers stay, in their other groups)."""
        with self.transaction() as conn:
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
        x = as_embedding_matrix(embeddings)
        labels = [str(label) for label in labels]
        if len(labels) != len(x):
            raise StoreError(f"{len(labels)} labels for {len(x)} embeddings; give one per row")
        if any(not label.strip() for label in labels):
            raise StoreError("labels must be non-empty strings")
        rows: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            rows.setdefault(label, []).append(i)
        with self.transaction() as conn:
            self._bind(conn, model_id, x.shape[1])
            groups = self._ensure_groups(conn, (group,))
            ids = [
                self._insert_speaker(conn, label, x[idx], groups, model_id, {"source": "gallery"})
                for label, idx in rows.items()
            ]
            return [self._get(conn, sid) for sid in ids]

    def import_speakers_parquet(
        self,
        source: str | os.PathLike | bytes,
        *,
        group: str,
        model_id: str,
        name: str | None = None,
    ) -> list[Speaker]:
        """Enroll every row of an extraction job's ``speakers.parquet`` into ``group``.

        ``source`` is the file's path or its bytes (what the service read through its
        allowed-path check); ``name`` is how messages and the speakers' ``source`` metadata
        name it (default: the path). Columns: ``key, dataset, speaker_id, num_utterances,
        embedding (list<float32>)``; each row is one speaker whose stored embedding is the
        row's (centroid) embedding, named ``speaker_id``, with ``metadata = {dataset, key,
        num_utterances, source}``. One transaction: a bad file enrolls nobody.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if isinstance(source, bytes):
            path = name or "speakers.parquet"
            readable = pa.BufferReader(source)
        else:
            if not Path(source).is_file():
                raise StoreError(f"{name or source} does not exist")
            path, readable = name or str(source), Path(source)
        try:
            table = pq.read_table(readable)
        except Exception as exc:
            raise StoreError(f"{path} is not a readable parquet file: {exc}") from exc
        need = {"key", "dataset", "speaker_id", "num_utterances", "embedding"}
        missing = need - set(table.column_names)
        if missing:
            raise StoreError(
                f"{path} lacks columns {sorted(missing)}; expected the speakers.parquet "
                "written by ray_jobs.extract"
            )
        data = table.select(sorted(need)).to_pydict()
        if not data["embedding"]:
            return []
        try:
            arr = np.array(data["embedding"], dtype=np.float32)
        except (ValueError, TypeError) as exc:  # ragged or null rows
            raise StoreError(f"{path}: embeddings are not equal-length vectors: {exc}") from exc
        x = as_embedding_matrix(arr, f"{path} embeddings")
        with self.transaction() as conn:
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
    def _fresh_index(self) -> CentroidIndex:
        """The centroid index, reloaded if any connection wrote since it was built."""
        with self._lock:
            if self._meta()[2] != self._index.version:
                self._index = CentroidIndex.load(self._conn, self._meta()[1] or 0)
            return self._index

    def identify(
        self,
        embedding: np.ndarray,
        *,
        group: str | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
        scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> list[Match]:
        """Open-set identification of one ``embedding: (D,)`` against the speaker centroids.

        Searches every speaker, or the members of ``group`` (unknown -> ``UnknownGroupError``).
        Returns the ``top_k`` best speakers by cosine score, best first (ties: older speaker
        first). Open set: if the best score is below ``threshold`` (or the gallery is empty),
        the list starts with ``Match(None, "unknown", best_score)`` followed by those same
        candidates, so it has up to ``top_k + 1`` entries; an empty gallery gives just
        ``[Match(None, "unknown", -1.0)]``. When the best score is at least ``threshold`` the
        first entry is the identified speaker; later candidates may score below ``threshold``.
        ``scorer(queries (B, D), centroids (N, D)) -> (B, N)`` replaces cosine (e.g. AS-norm,
        ``models.pipelines.scoring.asnorm_matrix``); ``threshold`` is then on its scale.
        """
        return self.identify_batch(
            np.asarray(embedding)[None],
            group=group,
            top_k=top_k,
            threshold=threshold,
            scorer=scorer,
        )[0]

    def identify_batch(
        self,
        embeddings: np.ndarray,
        *,
        group: str | None = None,
        top_k: int = 5,
        threshold: float = 0.5,
        scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
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
        if scorer is None:
            return index.search(q, group=group, top_k=top_k, threshold=threshold)
        return index.search(q, group=group, top_k=top_k, threshold=threshold, scorer=scorer)

    def gallery(self, group: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
        """``(ids, names, centroids (N, D) unit float32)`` of every speaker (oldest first), or
        of ``group``'s members (unknown -> ``UnknownGroupError``): what identification searches."""
        index = self._fresh_index()
        if group is None:
            rows = np.arange(len(index.ids))
        elif group in index.groups:
            rows = index.groups[group]
        else:
            raise UnknownGroupError(f"no group {group!r}; list_groups() lists them")
        return [index.ids[i] for i in rows], [index.names[i] for i in rows], index.matrix[rows]

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SpeakerStore({str(self.path)!r}, model_id={self.model_id!r})"

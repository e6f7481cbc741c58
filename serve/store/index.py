"""The in-memory centroid index of the enrollment database: open-set identification.

Every speaker's centroid (``models.pipelines.scoring.centroid``, stored with the speaker) is one
row of a unit-length matrix, with the row numbers of each group's members, so identification
is one matrix product per batch of queries (``scoring.score_centroids``). ``SpeakerStore``
rebuilds the index from one read snapshot whenever ``meta.version`` says a connection wrote.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models.pipelines.scoring import score_centroids
from serve.store.db import UnknownGroupError

UNKNOWN = "unknown"
# Score reported for "unknown" when the searched gallery is empty: the minimum cosine.
EMPTY_GALLERY_SCORE = -1.0


@dataclass(frozen=True)
class Match:
    speaker_id: str | None  # None for "unknown"
    name: str  # "unknown" when the best score is below the threshold
    score: float  # cosine similarity in [-1, 1] (or the search's normalised score)


@dataclass
class CentroidIndex:
    """Unit-length centroids of every speaker (oldest first), plus row indices per group."""

    version: int = -1
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    matrix: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # (N, D)
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sqlite3.Connection, dim: int) -> CentroidIndex:
        """Read the index from ``conn`` in one snapshot (version, speakers and memberships)."""
        conn.execute("BEGIN")
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
        matrix = (
            np.stack([np.frombuffer(r[2], np.float32) for r in rows])
            if rows
            else np.zeros((0, dim), np.float32)
        )
        pos = {sid: i for i, sid in enumerate(ids)}
        by_group: dict[str, list[int]] = {g: [] for g in group_names}
        for sid, g in members:
            by_group.setdefault(g, []).append(pos[sid])
        return cls(
            version=version,
            ids=ids,
            names=[r[1] for r in rows],
            matrix=np.ascontiguousarray(matrix),
            groups={g: np.array(sorted(v), dtype=np.int64) for g, v in by_group.items()},
        )

    def search(
        self,
        queries: np.ndarray,
        *,
        group: str | None,
        top_k: int,
        threshold: float,
        scorer: Callable[[np.ndarray, np.ndarray], np.ndarray] = score_centroids,
    ) -> list[list[Match]]:
        """``queries: (B, D)`` -> per query the ``top_k`` best speakers (``SpeakerStore.identify``
        documents the open-set answer). ``scorer(queries, centroids) -> (B, N)``: cosine, or a
        normalised score (``scoring.asnorm_matrix``) on the threshold's scale."""
        if group is None:
            rows = None
        elif group in self.groups:
            rows = self.groups[group]
        else:
            raise UnknownGroupError(f"no group {group!r}; list_groups() lists them")
        matrix = self.matrix if rows is None else self.matrix[rows]
        if matrix.shape[0] == 0:  # empty gallery: nothing to compare with
            return [[Match(None, UNKNOWN, EMPTY_GALLERY_SCORE)] for _ in queries]
        scores = scorer(queries, matrix)  # (B, N)
        k = min(int(top_k), scores.shape[1])
        out = []
        for s in scores:
            top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
            top = top[np.lexsort((top, -s[top]))]  # score descending, then row ascending
            cand = []
            for j in top:
                r = int(j) if rows is None else int(rows[j])
                cand.append(Match(self.ids[r], self.names[r], float(s[j])))
            if cand[0].score < threshold:
                cand.insert(0, Match(None, UNKNOWN, cand[0].score))
            out.append(cand)
        return out

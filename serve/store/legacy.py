"""The galleries of the older mode-based speaker servers ("modes"), over the enrollment database.

Those servers keep labelled embeddings in named galleries called modes, ``all`` plus named
groups, and one active mode that identification searches; a client may also upload a custom
gallery of labels and embeddings. Here a mode is a group of the enrollment database (``all`` is
every enrolled speaker) or ``custom``, the one uploaded gallery, kept apart from the enrolled
speakers. The active mode and the custom gallery live in two small tables of the same SQLite
file, so they persist with the database::

    legacy_mode(id=1, mode)                 one row: the active mode ("all" when absent)
    legacy_custom(row, label, vector BLOB)  the custom gallery, float32 rows in upload order

Ray-free (``sqlite3`` + numpy); the routes are ``serve/routes/legacy.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.pipelines.scoring import l2_normalise
from serve.store.db import StoreError, UnknownGroupError
from serve.store.speakers import SpeakerStore, as_embedding_matrix

ALL = "all"  # every enrolled speaker
CUSTOM = "custom"  # the gallery uploaded with ModifyFeatsCustom

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS legacy_mode (id INTEGER PRIMARY KEY CHECK (id = 1), "
    "mode TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS legacy_custom (row INTEGER PRIMARY KEY, label TEXT NOT NULL, "
    "vector BLOB NOT NULL)",
)


@dataclass(frozen=True)
class Gallery:
    """The speakers of one mode: ``labels[i]`` names row ``i`` of ``matrix`` (unit rows)."""

    mode: str
    labels: list[str]
    matrix: np.ndarray  # (N, D) float32, L2-normalised rows


class LegacyModes:
    """The active mode and the custom gallery of ``store``'s database file."""

    def __init__(self, store: SpeakerStore) -> None:
        self.store = store
        with store.transaction() as conn:
            for stmt in _SCHEMA:
                conn.execute(stmt)

    @property
    def mode(self) -> str:
        """The active mode (``all`` until a client switches)."""
        rows = self.store.query("SELECT mode FROM legacy_mode")
        return ALL if not rows else str(rows[0][0])

    def _custom(self) -> tuple[list[str], np.ndarray]:
        rows = self.store.query("SELECT label, vector FROM legacy_custom ORDER BY row")
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def gallery(self, mode: str | None = None) -> Gallery:
        """The gallery of ``mode`` (default: the active one). An unknown group, or ``custom``
        before any upload, raises ``UnknownGroupError``."""
        mode = self.mode if mode is None else mode
        if mode == CUSTOM:
            labels, matrix = self._custom()
            if not labels:
                raise UnknownGroupError(
                    "no custom gallery yet; upload one with POST /ModifyFeatsCustom"
                )
            return Gallery(CUSTOM, labels, l2_normalise(matrix, np.float32))
        _, names, matrix = self.store.gallery(None if mode == ALL else mode)
        return Gallery(mode, names, matrix)

    def set_mode(self, mode: str) -> Gallery:
        """Make ``mode`` active (``all``, ``custom`` or a group name); returns its gallery."""
        mode = str(mode).strip()
        if not mode:
            raise StoreError("feats_mode must be a non-empty mode name: all, custom or a group")
        gallery = self.gallery(mode)  # refuses unknown modes before switching
        with self.store.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO legacy_mode (id, mode) VALUES (1, ?)", (mode,))
        return gallery

    def set_custom(self, labels: Sequence[str], embeddings: np.ndarray) -> Gallery:
        """Replace the custom gallery with ``labels[i]`` -> row ``i`` of ``embeddings: (N, D)``
        and make it the active mode."""
        x = as_embedding_matrix(embeddings, "feats")
        labels = [str(label) for label in labels]
        if len(labels) != len(x):
            raise StoreError(f"{len(labels)} labels for {len(x)} feats; give one label per row")
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM legacy_custom")
            conn.executemany(
                "INSERT INTO legacy_custom (row, label, vector) VALUES (?, ?, ?)",
                [
                    (i, label, row.tobytes())
                    for i, (label, row) in enumerate(zip(labels, x, strict=True))
                ],
            )
            conn.execute("INSERT OR REPLACE INTO legacy_mode (id, mode) VALUES (1, ?)", (CUSTOM,))
        return Gallery(CUSTOM, labels, l2_normalise(x, np.float32))

    def reset(self) -> Gallery:
        """Back to mode ``all`` (the custom gallery is kept until the next upload)."""
        return self.set_mode(ALL)

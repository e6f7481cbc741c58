"""The enrollment database: speakers, their embeddings and groups in one SQLite file.

``db.py`` is the file (schema, version check, WAL write transactions, the error types),
``speakers.py`` the ``SpeakerStore`` API over it (enroll, groups, imports, reads), and
``index.py`` the in-memory centroid index that identification searches.
"""

from __future__ import annotations

from serve.store.db import (
    SCHEMA_VERSION,
    MetadataTooLargeError,
    ModelMismatchError,
    StoreError,
    UnknownGroupError,
    UnknownSpeakerError,
)
from serve.store.index import EMPTY_GALLERY_SCORE, UNKNOWN, CentroidIndex, Match
from serve.store.speakers import DEFAULT_GROUP, Speaker, SpeakerStore

__all__ = [
    "DEFAULT_GROUP",
    "EMPTY_GALLERY_SCORE",
    "SCHEMA_VERSION",
    "UNKNOWN",
    "CentroidIndex",
    "Match",
    "MetadataTooLargeError",
    "ModelMismatchError",
    "Speaker",
    "SpeakerStore",
    "StoreError",
    "UnknownGroupError",
    "UnknownSpeakerError",
]

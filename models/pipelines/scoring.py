"""Cosine scoring of speaker embeddings: the one implementation every caller uses.

Scores are cosine similarities of L2-normalised embeddings and a speaker's centroid is the mean
of its L2-normalised utterance embeddings, re-normalised, as in 3D-Speaker and WeSpeaker
(``wespeaker/bin/score.py``). Verification (``SpeakerEmbedder.score``, ``POST /verify``),
identification against enrolled centroids (``serve/store``), naming diarization clusters
(``models.pipelines.diarize.name_clusters``), diarization and extraction-job speaker
centroids all go through here. Plain numpy, so it runs wherever the embeddings are.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # a zero vector stays zero instead of dividing by zero


def l2_normalise(x: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Rows of ``x: (..., D)`` scaled to unit length, in ``dtype`` (a zero row stays zero)."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings ``(D,)`` (raw or normalised), in ``[-1, 1]``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.size} vs {b.size}")
    return float(l2_normalise(a) @ l2_normalise(b))


def score_centroids(queries: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``queries: (B, D)`` (raw) against unit-length ``centroids: (N, D)`` -> ``(B, N)`` cosine.

    The centroids are not normalised again (an index holds them normalised once, as
    :func:`centroid` makes them); the arithmetic is in the centroids' dtype.
    """
    c = np.asarray(centroids)
    return l2_normalise(queries, dtype=c.dtype) @ c.T  # (B, N)


def cosine_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row ``i`` of ``a: (N, D)`` against row ``i`` of ``b: (N, D)`` -> ``(N,)`` cosine (trials)."""
    return np.einsum("nd,nd->n", l2_normalise(a), l2_normalise(b))


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Every row of ``a: (K, D)`` against every row of ``b: (G, D)`` -> ``(K, G)`` cosine."""
    return score_centroids(a, l2_normalise(b))


def centroid(embeddings: np.ndarray) -> np.ndarray:
    """``(N, D)`` embeddings of one speaker -> ``(D,)`` float32: the mean of the L2-normalised
    rows, re-normalised (so every utterance counts equally, whatever its norm)."""
    mean = l2_normalise(embeddings).mean(axis=0)
    return l2_normalise(mean).astype(np.float32)

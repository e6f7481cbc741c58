"""Cosine scoring of speaker embeddings: the one implementation every caller uses.

Scores are cosine similarities of L2-normalised embeddings and a speaker's centroid is the mean
of its L2-normalised utterance embeddings, re-normalised, as in 3D-Speaker and WeSpeaker
(``wespeaker/bin/score.py``). Verification (``SpeakerEmbedder.score``, ``POST /verify``),
identification against enrolled centroids (``serve/store``), naming diarization clusters
(``models.pipelines.diarize.name_clusters``), diarization and extraction-job speaker
centroids all go through here. Plain numpy, so it runs wherever the embeddings are.

Trial lists over one labelled utterance list (:func:`make_pairs`: all same/different-speaker
pairs, or a seeded balanced subsample) are made here too, so the final evaluation
(``ray_jobs/evaluate/speaker.py``) and the per-epoch validation of the speaker task
(``models/tasks/speaker.py``) score the same trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-12  # a zero vector stays zero instead of dividing by zero
DEFAULT_MAX_TRIALS = 200_000
_ENUMERATE_MAX = 10_000_000  # pairs; above this, subsampling never enumerates all pairs


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


def _unique_pairs(rng: np.random.Generator, n_want: int, n: int, draw) -> np.ndarray:
    """Draw distinct unordered pairs ``(i < j)`` from ``draw(k) -> (i, j)`` until ``n_want``."""
    codes = np.empty(0, dtype=np.int64)
    while codes.size < n_want:
        i, j = draw(2 * (n_want - codes.size) + 64)
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        new = np.concatenate([codes, lo * n + hi])
        _, first = np.unique(new, return_index=True)
        codes = new[np.sort(first)]  # dedupe, keeping draw order so truncation stays random
    codes = codes[:n_want]
    return np.stack([codes // n, codes % n], axis=1)


def make_pairs(
    speakers: Sequence[Any], max_trials: int = DEFAULT_MAX_TRIALS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Trials over one utterance list: ``(pairs (N, 2) int64, target (N,) bool)``.

    All unordered pairs when there are at most ``max_trials``; otherwise a subsample seeded by
    ``seed``: ``max_trials // 2`` same-speaker pairs (or all of them, if fewer) and the rest
    different-speaker pairs, each drawn uniformly without replacement. EER and minDCF depend on
    per-class error rates only, so the balance does not bias them.
    """
    spk = np.unique(np.asarray(speakers), return_inverse=True)[1].astype(np.int64)
    n = spk.size
    if np.unique(spk).size < 2:
        raise ValueError(
            "need utterances from at least 2 speakers to form different-speaker trials"
        )
    counts = np.bincount(spk)
    n_all = n * (n - 1) // 2
    n_tar_all = int((counts * (counts - 1) // 2).sum())
    if n_tar_all == 0:
        raise ValueError("every speaker has a single utterance: no same-speaker trials possible")
    if n_all <= max_trials:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1).astype(np.int64), spk[i] == spk[j]

    rng = np.random.default_rng(seed)
    n_tar = min(max_trials // 2, n_tar_all)
    n_non = min(max_trials - n_tar, n_all - n_tar_all)
    by_spk = np.argsort(spk, kind="stable")  # utterance indices grouped by speaker
    offsets = np.concatenate([[0], np.cumsum(counts)])
    weights = counts * (counts - 1) / 2
    weights = weights / weights.sum()

    def draw_target(k: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.choice(counts.size, size=k, p=weights)  # speaker, weighted by its pair count
        a = rng.integers(0, counts[s])
        b = rng.integers(0, counts[s] - 1)
        b = b + (b >= a)  # distinct positions within the speaker
        return by_spk[offsets[s] + a], by_spk[offsets[s] + b]

    def draw_nontarget(k: int) -> tuple[np.ndarray, np.ndarray]:
        i, j = rng.integers(0, n, size=k), rng.integers(0, n, size=k)
        keep = spk[i] != spk[j]
        return i[keep], j[keep]

    def sample(want: int, available: int, same: bool, draw) -> np.ndarray:
        # Rejection sampling needs ~want draws while want is well below what is available; near
        # exhaustion it would crawl (coupon collector), so enumerate and choose instead.
        if want <= available // 2 or n_all > _ENUMERATE_MAX:
            return _unique_pairs(rng, want, n, draw)
        i, j = np.triu_indices(n, k=1)
        cls = np.flatnonzero((spk[i] == spk[j]) == same)
        pick = np.sort(rng.choice(cls, size=want, replace=False))
        return np.stack([i[pick], j[pick]], axis=1).astype(np.int64)

    tar = sample(n_tar, n_tar_all, True, draw_target)
    non = sample(n_non, n_all - n_tar_all, False, draw_nontarget)
    pairs = np.concatenate([tar, non])
    target = np.concatenate([np.ones(len(tar), bool), np.zeros(len(non), bool)])
    return pairs, target

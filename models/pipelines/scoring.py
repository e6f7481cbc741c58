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


# ---------------------------------------------------------------------------------------------
# Adaptive s-norm (AS-norm)
#
# Matejka et al. 2017, "Analysis of Score Normalization in Multilingual Speaker Recognition"
# (Interspeech), as in WeSpeaker's ``wespeaker/bin/score_norm.py``: each side of a trial is
# scored against a cohort of other speakers' embeddings, and only its ``top_k`` highest cohort
# scores give the mean and standard deviation that normalise the trial score from that side;
# the normalised score is the average of the two sides.


def cohort_stats(emb: np.ndarray, cohort: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """``emb: (N, D)`` (raw) against unit-length ``cohort: (C, D)`` -> mean and std ``(N,)`` of
    each row's ``top_k`` highest cosine scores (``top_k`` is capped at ``C``)."""
    c = np.asarray(cohort)
    if c.ndim != 2 or c.shape[0] == 0:
        raise ValueError(f"cohort must be a non-empty (C, D) matrix, got shape {c.shape}")
    e = np.atleast_2d(np.asarray(emb))
    if e.shape[1] != c.shape[1]:
        raise ValueError(
            f"embeddings are {e.shape[1]}-dim but the cohort is {c.shape[1]}-dim: the cohort "
            "must come from the same model"
        )
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    k = min(int(top_k), c.shape[0])
    s = score_centroids(e, c).astype(np.float64)  # (N, C)
    top = -np.partition(-s, k - 1, axis=1)[:, :k]  # (N, k) the k largest
    return top.mean(axis=1), np.maximum(top.std(axis=1), EPS)


def as_norm(
    scores: np.ndarray,
    enroll_stats: tuple[np.ndarray, np.ndarray],
    test_stats: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """``s = ((x - mu_e) / sd_e + (x - mu_t) / sd_t) / 2`` elementwise (broadcasting: trials
    ``(N,)`` with per-trial stats, or a ``(B, G)`` matrix with test stats ``(B, 1)`` and enroll
    stats ``(G,)``)."""
    x = np.asarray(scores, dtype=np.float64)
    mu_e, sd_e = enroll_stats
    mu_t, sd_t = test_stats
    return 0.5 * ((x - mu_e) / sd_e + (x - mu_t) / sd_t)


def asnorm_pairs(a: np.ndarray, b: np.ndarray, cohort: np.ndarray, top_k: int) -> np.ndarray:
    """AS-norm of trials ``a[i]`` vs ``b[i]`` (``(N, D)`` each) against a unit-length cohort."""
    return as_norm(
        cosine_pairs(a, b), cohort_stats(a, cohort, top_k), cohort_stats(b, cohort, top_k)
    )


def asnorm_matrix(
    queries: np.ndarray, gallery: np.ndarray, cohort: np.ndarray, top_k: int
) -> np.ndarray:
    """AS-norm of ``queries: (B, D)`` against unit-length ``gallery: (G, D)`` -> ``(B, G)``."""
    raw = score_centroids(queries, gallery).astype(np.float64)  # (B, G)
    mu_q, sd_q = cohort_stats(queries, cohort, top_k)
    return as_norm(raw, cohort_stats(gallery, cohort, top_k), (mu_q[:, None], sd_q[:, None]))

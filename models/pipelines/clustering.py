"""Clustering of speaker embeddings for diarization: spectral (auto-tuned) and agglomerative.

Spectral clustering follows Park et al. 2019, "Auto-Tuning Spectral Clustering for Speaker
Diarization Using Normalized Maximum Eigengap" (NME-SC, IEEE SPL; reference implementation
``tango4j/Auto-Tuning-Spectral-Clustering``, also in NVIDIA NeMo): the cosine affinity is
binarised row by row (each row keeps its ``p`` nearest neighbours, "p-pruning"), symmetrised, and
the number of speakers is the position of the largest gap in the eigenvalues of its graph
Laplacian. The pruning level ``p`` is chosen per recording by minimising ``p / g(p)``, where
``g(p)`` is the largest eigengap normalised by the largest eigenvalue. Rows of the ``K``
smallest-eigenvalue eigenvectors are clustered with k-means (Ng, Jordan & Weiss 2001).

AHC is average-linkage agglomerative clustering on cosine distance cut at ``threshold``, the
classic baseline (e.g. pyannote's and Kaldi's ``cluster.py``). numpy/scipy only.

Guards of the estimated count (none applies when ``num_speakers`` is given), because on short
recordings (a 30-s excerpt is 25-40 windows) the plain NME estimate is mostly the maximum: with
``p`` = 5% of 30 windows each row keeps 2 neighbours, the pruned graph falls apart into many
small components, and each component is a zero eigenvalue, i.e. a "speaker":

- ``min_neighbours`` (7): every row keeps at least this many neighbours, so components are
  speakers, not fragments of a sparse graph;
- eigengap confidence: the chosen ``K``'s gap must be at least ``eigengap_ratio`` times the
  largest gap at a smaller count, else that smaller count wins (repeatedly); a gap below
  ``min_eigengap`` (normalised by the largest eigenvalue, as NME's ``g``) means no structure:
  one speaker;
- minimum duration: a cluster holding less than ``min_cluster_seconds`` of speech (window
  ``durations`` given) joins the cluster of the nearest centroid: a few stray windows (laughs,
  noise, overlap) are not a speaker;
- merge (``merge``, off by default after spectral clustering): clusters whose centroids' cosine
  distance is below ``threshold`` (the same cut as AHC's; from the model's calibration record
  in ``Diarizer``) are merged, closest pair first.

Measured on 41 30-s excerpts (the pyannote sample and LibriSpeech conversations of 1-4
held-out speakers, ``ray_jobs/bench/diarize.py``) with our 23%-EER realdata model: the plain
estimate was worse than labelling all speech as one speaker on 25 files (8 speakers on most);
with these defaults on none, mean DER 0.28 against 0.45 for one speaker. The calibrated merge
also stays at or below one speaker on every file, but a weak model's centroids of two real
speakers often score above its EER threshold (0.97 on the pyannote sample), so it merges them:
mean DER 0.29; it is an option, and AHC always cuts at the calibrated threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.cluster.vq import kmeans2
from scipy.linalg import eigh

from models.pipelines.scoring import l2_normalise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusteringConfig:
    method: Literal["spectral", "ahc"] = "spectral"
    # cosine *distance* (1 - cos) at which clusters stop merging (AHC, and the merge pass after
    # spectral clustering); None: from the model's calibration record (Diarizer), else 0.5
    threshold: float | None = None
    max_speakers: int = 8  # upper bound on the estimated number of speakers
    # spectral: candidate pruning levels p (fraction of neighbours kept per row); NME picks one
    p_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    min_neighbours: int = 7  # keep at least this many neighbours per row whatever p is
    kmeans_restarts: int = 10  # k-means++ restarts; the lowest-distortion run wins
    seed: int = 0  # k-means seed: same embeddings -> same labels
    # spectral needs enough points for an eigengap; fewer than this fall back to AHC
    min_points_spectral: int = 6
    # a single speaker has no eigengap to find: when every pair is this similar, K = 1
    single_speaker_similarity: float = 0.6
    # eigengap confidence (module docstring): a K's gap must beat every smaller K's by this factor
    eigengap_ratio: float = 1.2
    min_eigengap: float = 0.02  # normalised gap (gap / largest eigenvalue) below which K = 1
    merge: bool = False  # spectral: merge clusters closer than `threshold` after estimating K
    min_cluster_seconds: float = 3.0  # clusters with less speech join the nearest (0: off)


DEFAULT_THRESHOLD = 0.5  # cosine distance, when neither config nor calibration gives one


def resolved_threshold(cfg: ClusteringConfig) -> float:
    return DEFAULT_THRESHOLD if cfg.threshold is None else float(cfg.threshold)


def _relabel_by_appearance(labels: np.ndarray) -> np.ndarray:
    """Rename cluster ids to 0..K-1 in order of first appearance."""
    out = np.empty_like(labels)
    mapping: dict[int, int] = {}
    for i, lab in enumerate(labels.tolist()):
        if lab not in mapping:
            mapping[lab] = len(mapping)
        out[i] = mapping[lab]
    return out.astype(np.int64)


def _bounds(
    n: int,
    cfg: ClusteringConfig,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
) -> tuple[int, int]:
    if num_speakers is not None:
        if num_speakers < 1:
            raise ValueError(f"num_speakers must be >= 1, got {num_speakers}")
        k = min(num_speakers, n)
        return k, k
    lo = 1 if min_speakers is None else int(min_speakers)
    hi = cfg.max_speakers if max_speakers is None else int(max_speakers)
    if lo < 1 or hi < lo:
        raise ValueError(
            f"need 1 <= min_speakers <= max_speakers, got min={min_speakers} max={max_speakers}"
        )
    return min(lo, n), min(hi, n)


def _ahc(emb: np.ndarray, cfg: ClusteringConfig, lo: int, hi: int) -> np.ndarray:
    z = linkage(emb, method="average", metric="cosine")
    labels = fcluster(z, t=resolved_threshold(cfg), criterion="distance")
    k = int(labels.max())
    if k < lo or k > hi:  # re-cut the same tree at the nearest allowed number of clusters
        labels = fcluster(z, t=min(max(k, lo), hi), criterion="maxclust")
    return labels


def _laplacian_eigs(aff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lap = np.diag(aff.sum(axis=1)) - aff  # unnormalised Laplacian, as in NME-SC
    return eigh(lap)  # ascending eigenvalues, (N,), (N, N)


def _prune(sim: np.ndarray, p: float, min_neighbours: int) -> np.ndarray:
    """Keep each row's ``ceil(p * N)`` largest similarities as 1, the rest 0; symmetrise."""
    n = sim.shape[0]
    keep = min(n, max(min_neighbours, int(np.ceil(p * n))))
    top = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]  # (N, keep)
    binary = np.zeros_like(sim)
    np.put_along_axis(binary, top, 1.0, axis=1)
    return 0.5 * (binary + binary.T)


def _spectral(emb: np.ndarray, cfg: ClusteringConfig, lo: int, hi: int) -> np.ndarray:
    n = emb.shape[0]
    sim = emb @ emb.T  # (N, N) cosine similarity
    np.fill_diagonal(sim, 1.0)
    if lo == 1 and hi >= 1 and sim.min() >= cfg.single_speaker_similarity:
        return np.zeros(n, dtype=np.int64)
    # estimate K up to twice the upper bound, then clip it into [lo, hi]: a bound below the
    # true count should give the bound, not an arbitrary pick among the tiny gaps under it
    k_est_max = max(1, min(n - 1, 2 * max(hi, cfg.max_speakers)))
    k_top = k_est_max + 1  # eigengaps up to K need K + 1 eigenvalues
    best = None
    for p in cfg.p_grid:
        aff = _prune(sim, p, cfg.min_neighbours)
        vals, vecs = _laplacian_eigs(aff)
        gaps = np.diff(vals[:k_top])  # gaps[i] = lambda_{i+1} - lambda_i
        g = gaps.max() / max(vals[-1], 1e-10)  # normalised maximum eigengap
        ratio = p / max(g, 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, p, vals, vecs)
    assert best is not None
    _, p, vals, vecs = best
    gaps = np.diff(vals[:k_top])
    # K = i + 1 where gap i (lambda_{i+1} - lambda_i) is largest
    k = lo if lo == hi else min(max(confident_k(gaps, vals[-1], cfg), lo), hi)
    log.debug("spectral clustering: p=%.2f, K=%d, eigenvalues %s", p, k, vals[: k_top + 1])
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    feats = vecs[:, :k]  # (N, K) spectral embedding
    feats = l2_normalise(feats)  # rows onto the unit sphere (Ng, Jordan & Weiss)
    best_labels, best_cost = None, np.inf
    for r in range(cfg.kmeans_restarts):
        centroids, labels = kmeans2(feats, k, minit="++", seed=cfg.seed + r)
        cost = float(np.sum((feats - centroids[labels]) ** 2))
        if len(np.unique(labels)) == k and cost < best_cost - 1e-12:
            best_labels, best_cost = labels, cost
    if best_labels is None:  # every restart lost a cluster: fall back to the tree
        return _ahc(emb, cfg, k, k)
    return best_labels


def confident_k(gaps: np.ndarray, top: float, cfg: ClusteringConfig) -> int:
    """The eigengap count with the confidence check (module docstring): ``gaps[i]`` is the gap
    for ``K = i + 1``, ``top`` the largest eigenvalue."""
    k = int(np.argmax(gaps)) + 1
    while k > 1:
        smaller = int(np.argmax(gaps[: k - 1])) + 1
        if gaps[k - 1] >= cfg.eigengap_ratio * gaps[smaller - 1]:
            break
        k = smaller
    if k > 1 and gaps[k - 1] / max(top, 1e-10) < cfg.min_eigengap:
        k = 1
    return k


def _centroids(emb: np.ndarray, labels: np.ndarray, ids: list[int]) -> np.ndarray:
    return l2_normalise(np.stack([emb[labels == c].mean(axis=0) for c in ids]))  # (K, D)


def merge_clusters(
    emb: np.ndarray,
    labels: np.ndarray,
    cfg: ClusteringConfig,
    lo: int = 1,
    durations: np.ndarray | None = None,
) -> np.ndarray:
    """The merge and minimum-duration guards (module docstring) on unit-length ``emb: (N, D)``
    with ``labels (N,)``; never below ``lo`` clusters. ``durations (N,)``: seconds of speech
    each row stands for (the minimum-duration rule needs them)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    thr = resolved_threshold(cfg)
    for _ in range(labels.size):  # each pass removes one cluster: bounded by N
        ids = sorted(set(labels.tolist()))
        if len(ids) <= max(lo, 1):
            break
        cents = _centroids(emb, labels, ids)
        sim = cents @ cents.T
        np.fill_diagonal(sim, -np.inf)
        if durations is not None and cfg.min_cluster_seconds > 0:
            secs = np.array([durations[labels == c].sum() for c in ids])
            small = int(np.argmin(secs))
            if secs[small] < cfg.min_cluster_seconds:
                target = int(np.argmax(sim[small]))
                labels[labels == ids[small]] = ids[target]
                continue
        if not cfg.merge:
            break
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if 1.0 - sim[i, j] >= thr:
            break
        labels[labels == ids[j]] = ids[i]
    return labels


def cluster_embeddings(
    emb: np.ndarray,
    cfg: ClusteringConfig = ClusteringConfig(),
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    durations: np.ndarray | None = None,
) -> np.ndarray:
    """``emb: (N, D)`` speaker embeddings -> ``(N,) int64`` labels ``0..K-1`` (first-appearance
    order).

    ``num_speakers`` forces ``K`` (capped at ``N``); otherwise ``K`` is estimated (eigengap or
    AHC threshold, then the merge and minimum-duration guards; ``durations (N,)`` are the
    seconds of speech each row stands for) within ``[min_speakers or 1, max_speakers or
    cfg.max_speakers]``. Embeddings
    are L2-normalised here. ``N = 0`` gives an empty array, ``N = 1`` a single cluster, and small
    ``N`` (below ``cfg.min_points_spectral``) uses AHC whatever ``cfg.method`` says.
    """
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"expected embeddings of shape (N, D), got {emb.shape}")
    n = emb.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.isfinite(emb).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if cfg.method not in ("spectral", "ahc"):
        raise ValueError(f"unknown clustering method {cfg.method!r}; use 'spectral' or 'ahc'")
    lo, hi = _bounds(n, cfg, num_speakers, min_speakers, max_speakers)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    emb = l2_normalise(emb)
    if hi == 1:
        return np.zeros(n, dtype=np.int64)
    if lo == n:
        return np.arange(n, dtype=np.int64)
    if cfg.method == "ahc" or n < cfg.min_points_spectral:
        labels = _ahc(emb, cfg, lo, hi)
    else:
        labels = _spectral(emb, cfg, lo, hi)
    if num_speakers is None:
        if durations is not None:
            durations = np.asarray(durations, dtype=np.float64)
            if durations.shape != (n,):
                raise ValueError(f"durations must have shape ({n},), got {durations.shape}")
        labels = merge_clusters(emb, np.asarray(labels), cfg, lo, durations)
    return _relabel_by_appearance(np.asarray(labels))

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
    threshold: float = 0.5  # AHC: cosine *distance* (1 - cos) at which clusters stop merging
    max_speakers: int = 8  # upper bound on the estimated number of speakers
    # spectral: candidate pruning levels p (fraction of neighbours kept per row); NME picks one
    p_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
    min_neighbours: int = 2  # keep at least this many neighbours per row whatever p is
    kmeans_restarts: int = 10  # k-means++ restarts; the lowest-distortion run wins
    seed: int = 0  # k-means seed: same embeddings -> same labels
    # spectral needs enough points for an eigengap; fewer than this fall back to AHC
    min_points_spectral: int = 6
    # a single speaker has no eigengap to find: when every pair is this similar, K = 1
    single_speaker_similarity: float = 0.6


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
    labels = fcluster(z, t=cfg.threshold, criterion="distance")
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
    k = lo if lo == hi else min(max(int(np.argmax(gaps)) + 1, lo), hi)
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


def cluster_embeddings(
    emb: np.ndarray,
    cfg: ClusteringConfig = ClusteringConfig(),
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
) -> np.ndarray:
    """``emb: (N, D)`` speaker embeddings -> ``(N,) int64`` labels ``0..K-1`` (first-appearance
    order).

    ``num_speakers`` forces ``K`` (capped at ``N``); otherwise ``K`` is estimated (eigengap or
    AHC threshold) within ``[min_speakers or 1, max_speakers or cfg.max_speakers]``. Embeddings
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
    return _relabel_by_appearance(np.asarray(labels))

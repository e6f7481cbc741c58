import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.pipelines.clustering import ClusteringConfig, cluster_embeddings  # noqa: E402

METHODS = ("spectral", "ahc")


def _blobs(k, per, dim=32, spread=0.15, seed=0):
    """``k`` well-separated clusters on the unit sphere, points shuffled; -> (emb, true ids)."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:k]  # orthonormal directions
    truth = rng.permutation(np.repeat(np.arange(k), per))
    emb = centres[truth] + spread * rng.standard_normal((truth.size, dim)) / np.sqrt(dim)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), truth


def _same_partition(a, b):
    # a partition is identified by its co-membership matrix
    return np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_recovers_number_of_clusters(method, k):
    emb, truth = _blobs(k, per=12, seed=k)
    labels = cluster_embeddings(emb, ClusteringConfig(method=method))
    assert labels.max() + 1 == k
    assert _same_partition(labels, truth)


@pytest.mark.parametrize("method", METHODS)
def test_labels_ordered_by_first_appearance(method):
    emb, _ = _blobs(3, per=10, seed=7)
    labels = cluster_embeddings(emb, ClusteringConfig(method=method))
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(labels.max() + 1)]
    assert first == sorted(first) and labels[0] == 0 and labels.dtype == np.int64


@pytest.mark.parametrize("method", METHODS)
def test_forced_and_bounded_k(method):
    emb, truth = _blobs(4, per=10, seed=3)
    cfg = ClusteringConfig(method=method)
    for forced in (2, 4, 6):
        assert cluster_embeddings(emb, cfg, num_speakers=forced).max() + 1 == forced
    assert cluster_embeddings(emb, cfg, max_speakers=2).max() + 1 == 2
    assert cluster_embeddings(emb, cfg, min_speakers=6).max() + 1 == 6
    # bounds that contain the truth do not change the answer
    assert _same_partition(cluster_embeddings(emb, cfg, min_speakers=3, max_speakers=5), truth)
    assert cluster_embeddings(emb, ClusteringConfig(method=method, max_speakers=3)).max() == 2


@pytest.mark.parametrize("method", METHODS)
def test_tiny_inputs(method):
    cfg = ClusteringConfig(method=method)
    assert cluster_embeddings(np.zeros((0, 8)), cfg).shape == (0,)
    assert cluster_embeddings(np.ones((1, 8)), cfg).tolist() == [0]
    a, b = np.eye(8)[0], np.eye(8)[1]
    assert cluster_embeddings(np.stack([a, b]), cfg).tolist() == [0, 1]  # orthogonal: 2
    assert cluster_embeddings(np.stack([a, a]), cfg).tolist() == [0, 0]
    assert cluster_embeddings(np.stack([a, b]), cfg, num_speakers=1).tolist() == [0, 0]
    assert cluster_embeddings(np.stack([a, a]), cfg, num_speakers=5).tolist() == [0, 1]
    assert cluster_embeddings(np.stack([a, b, a]), cfg).tolist() == [0, 1, 0]


def test_deterministic_and_validates():
    emb, _ = _blobs(3, per=15, spread=0.6, seed=11)
    a = cluster_embeddings(emb, ClusteringConfig(method="spectral"))
    assert np.array_equal(a, cluster_embeddings(emb, ClusteringConfig(method="spectral")))
    with pytest.raises(ValueError, match="min_speakers"):
        cluster_embeddings(emb, min_speakers=4, max_speakers=2)
    with pytest.raises(ValueError, match="method"):
        cluster_embeddings(emb, ClusteringConfig(method="kmeans"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        cluster_embeddings(emb[0])

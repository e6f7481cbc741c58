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


def test_eigengap_confidence_falls_back_to_fewer_speakers():
    from models.pipelines.clustering import confident_k

    cfg = ClusteringConfig(eigengap_ratio=1.2, min_eigengap=0.02)
    # gaps[i] is the gap for K = i + 1; the largest (K = 4) barely beats K = 2's: K = 2
    assert confident_k(np.array([0.01, 0.30, 0.02, 0.33, 0.01]), 10.0, cfg) == 2
    assert confident_k(np.array([0.01, 0.30, 0.02, 0.90, 0.01]), 10.0, cfg) == 4  # clear gap
    # every gap tiny against the largest eigenvalue: no structure, one speaker
    assert confident_k(np.array([0.01, 0.05, 0.02]), 10.0, cfg) == 1
    assert confident_k(np.array([0.01, 0.05, 0.02]), 10.0, ClusteringConfig(min_eigengap=0.0)) == 2


def test_min_cluster_duration_merges_stray_windows_into_nearest():
    from models.pipelines.clustering import merge_clusters

    emb, truth = _blobs(3, per=10, seed=11)
    stray = np.flatnonzero(truth == 2)[:2]
    labels = truth.copy()
    labels[stray] = 7  # two windows (1.5 s of speech) split off speaker 2
    dur = np.full(truth.size, 0.75)
    cfg = ClusteringConfig(min_cluster_seconds=3.0)
    out = merge_clusters(emb, labels, cfg, durations=dur)
    assert _same_partition(out, truth)  # joined the nearest cluster: their own speaker's
    assert _same_partition(merge_clusters(emb, labels, cfg), labels)  # no durations: no rule
    assert (
        len(
            set(
                merge_clusters(
                    emb, labels, ClusteringConfig(min_cluster_seconds=9.0), durations=dur
                )
            )
        )
        == 1
    )
    # through cluster_embeddings: a cluster of 2 short windows is not a speaker
    extra = np.concatenate([emb, _blobs(4, per=2, seed=3)[0][-2:]])
    d = np.concatenate([dur, [0.75, 0.75]])
    assert cluster_embeddings(extra, ClusteringConfig(), durations=d).max() + 1 == 3
    with pytest.raises(ValueError, match="durations"):
        cluster_embeddings(extra, ClusteringConfig(), durations=d[:-1])


def test_calibrated_merge_joins_clusters_closer_than_the_threshold():
    from models.pipelines.clustering import merge_clusters

    emb, truth = _blobs(2, per=10, seed=2)
    split = truth.copy()
    split[np.flatnonzero(truth == 0)[:5]] = 5  # speaker 0 cut in two halves
    near = ClusteringConfig(merge=True, threshold=0.5)  # cosine distance within a speaker ~0.02
    assert _same_partition(merge_clusters(emb, split, near), truth)
    assert _same_partition(merge_clusters(emb, split, ClusteringConfig(threshold=0.5)), split)
    assert _same_partition(
        merge_clusters(emb, split, ClusteringConfig(merge=True, threshold=0.001)), split
    )
    assert len(set(merge_clusters(emb, split, near, lo=3).tolist())) == 3  # never below lo

"""models.pipelines.scoring: the one cosine / centroid implementation (Ray-free, numpy only)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

sys.modules.setdefault("ray", None)

from models.metrics import compute_eer  # noqa: E402
from models.pipelines.scoring import (  # noqa: E402
    as_norm,
    asnorm_matrix,
    asnorm_pairs,
    centroid,
    cohort_stats,
    cosine,
    cosine_matrix,
    cosine_pairs,
    l2_normalise,
    make_pairs,
    score_centroids,
)


def test_l2_normalise_rows_and_zero_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0]])
    assert l2_normalise(x, dtype=np.float32).dtype == np.float32


def test_cosine_is_scale_invariant_and_checks_sizes():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(8), rng.standard_normal(8)
    expect = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine(a, b) == pytest.approx(expect)
    assert cosine(3 * a, 0.5 * b) == pytest.approx(expect)
    assert cosine(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in size"):
        cosine(a, b[:4])


def test_centroid_is_the_renormalised_mean_of_normalised_rows():
    # A long row must not outweigh a short one: both count once after normalisation.
    x = np.array([[10.0, 0.0], [0.0, 1.0]], np.float32)
    c = centroid(x)
    assert c.dtype == np.float32 and c.shape == (2,)
    np.testing.assert_allclose(c, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_score_centroids_matches_pairwise_cosine():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 16))
    gallery = rng.standard_normal((5, 16))
    cents = np.stack([centroid(g[None]) for g in gallery])  # (5, 16) unit rows, float32
    got = score_centroids(q, cents)
    assert got.shape == (3, 5) and got.dtype == np.float32
    want = np.array([[cosine(a, g) for g in gallery] for a in q])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(cosine_matrix(q, gallery), want, atol=1e-12)


def test_cosine_pairs_scores_each_trial_row_against_its_partner():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    got = cosine_pairs(a * 3.0, b)  # raw norms do not change a cosine
    want = [cosine(x, y) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert got.shape == (5,)


def test_make_pairs_all_and_sampled():
    speakers = ["a", "a", "b", "b", "b", "c"]
    pairs, target = make_pairs(speakers, max_trials=100)
    assert len(pairs) == 15 and int(target.sum()) == 1 + 3
    assert all(i < j for i, j in pairs)
    assert all(t == (speakers[i] == speakers[j]) for (i, j), t in zip(pairs, target, strict=True))

    many = [f"s{k // 20}" for k in range(1000)]  # 50 speakers x 20: 499,500 pairs
    pairs, target = make_pairs(many, max_trials=2000, seed=3)
    assert len(pairs) == 2000 and int(target.sum()) == 1000  # balanced
    assert len({(int(i), int(j)) for i, j in pairs}) == 2000  # no duplicates
    assert np.all(pairs[:, 0] < pairs[:, 1])
    np.testing.assert_array_equal(target, [many[i] == many[j] for i, j in pairs])
    again, _ = make_pairs(many, max_trials=2000, seed=3)
    other, _ = make_pairs(many, max_trials=2000, seed=4)
    np.testing.assert_array_equal(pairs, again)
    assert not np.array_equal(pairs, other)
    # fewer same-speaker pairs than half the budget: all of them are used
    few = ["x", "x"] + [f"n{k}" for k in range(200)]
    pairs, target = make_pairs(few, max_trials=100)
    assert int(target.sum()) == 1 and len(pairs) == 100

    # a budget close to all pairs: the nearly exhausted class is enumerated, not rejection-sampled
    dense = [f"s{k // 5}" for k in range(60)]  # 1770 pairs, 120 same-speaker
    pairs, target = make_pairs(dense, max_trials=1700, seed=0)
    assert (len(pairs), int(target.sum())) == (1700, 120)
    assert len({(int(i), int(j)) for i, j in pairs}) == 1700
    np.testing.assert_array_equal(target, [dense[i] == dense[j] for i, j in pairs])

    with pytest.raises(ValueError, match="at least 2 speakers"):
        make_pairs(["a", "a", "a"])
    with pytest.raises(ValueError, match="single utterance"):
        make_pairs(["a", "b", "c"])


def test_asnorm_matches_the_formula_and_the_matrix_form():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    cohort = l2_normalise(rng.standard_normal((12, 8)))
    got = asnorm_pairs(a, b, cohort, top_k=4)
    for n in range(5):  # the slow obvious way, one trial at a time
        sides = []
        for x in (a[n], b[n]):
            cs = sorted((cosine(x, c) for c in cohort), reverse=True)[:4]
            sides.append((np.mean(cs), np.std(cs)))
        x = cosine(a[n], b[n])
        want = 0.5 * ((x - sides[0][0]) / sides[0][1] + (x - sides[1][0]) / sides[1][1])
        assert got[n] == pytest.approx(want, abs=1e-9)
    gallery = l2_normalise(b)
    mat = asnorm_matrix(a, gallery, cohort, top_k=4)  # (5, 5): every query vs every centroid
    assert mat.shape == (5, 5)
    np.testing.assert_allclose(np.diag(mat), got, atol=1e-9)
    mu, sd = cohort_stats(a, cohort, top_k=100)  # top_k above C uses the whole cohort
    np.testing.assert_allclose(mu, cosine_matrix(a, cohort).mean(axis=1), atol=1e-9)
    np.testing.assert_allclose(as_norm(np.array([mu[0]]), (mu[:1], sd[:1]), (mu[:1], sd[:1])), [0])
    with pytest.raises(ValueError, match="same model"):
        cohort_stats(rng.standard_normal((2, 7)), cohort, 3)
    with pytest.raises(ValueError, match="non-empty"):
        cohort_stats(a, np.zeros((0, 8)), 3)
    with pytest.raises(ValueError, match="top_k"):
        cohort_stats(a, cohort, 0)


def test_asnorm_removes_speaker_dependent_score_offsets():
    """Speakers whose embeddings share a common component to different degrees (channel,
    gender, a weak model's bias) score high against everyone; AS-norm's per-side cohort
    statistics cancel that offset, so one threshold fits every speaker: EER drops a lot."""
    rng = np.random.default_rng(0)
    d = 32
    common = l2_normalise(rng.standard_normal(d))

    def voices(n_speakers: int, n_utts: int) -> np.ndarray:
        base = l2_normalise(rng.standard_normal((n_speakers, d)))
        bias = rng.uniform(0.0, 2.5, n_speakers)[:, None, None] * common
        noise = 0.9 * rng.standard_normal((n_speakers, n_utts, d)) * 0.25
        return l2_normalise(base[:, None, :] + noise + bias)  # (S, U, D)

    utts = voices(40, 4).reshape(-1, d)
    cohort = voices(60, 1)[:, 0]  # disjoint speakers
    i, j = np.triu_indices(len(utts), 1)
    target = i // 4 == j // 4
    raw_eer = compute_eer(cosine_pairs(utts[i], utts[j]), target)[0]
    norm_eer = compute_eer(asnorm_pairs(utts[i], utts[j], cohort, top_k=20), target)[0]
    assert raw_eer > 0.2 and norm_eer < 0.6 * raw_eer, (raw_eer, norm_eer)

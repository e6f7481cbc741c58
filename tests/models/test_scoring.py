"""models.pipelines.scoring: the one cosine / centroid implementation (Ray-free, numpy only)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

sys.modules.setdefault("ray", None)

from models.pipelines.scoring import (  # noqa: E402
    centroid,
    cosine,
    cosine_matrix,
    cosine_pairs,
    l2_normalise,
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

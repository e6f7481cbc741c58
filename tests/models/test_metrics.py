"""Verification metrics: hand-computed cases, ties, a brute-force sweep and a closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from models.metrics import compute_eer, compute_min_dcf, error_rates, verification_metrics


def _brute_points(scores, labels):
    """O(N^2) operating points: every distinct score and one threshold above the maximum."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    tar, non = scores[labels], scores[~labels]
    thr = sorted(set(scores.tolist())) + [scores.max() + 1.0]
    pm = [sum(1 for x in tar if x < t) / len(tar) for t in thr]
    pf = [sum(1 for x in non if x >= t) / len(non) for t in thr]
    return np.array(pm), np.array(pf), np.array(thr)


def _brute_eer(pm, pf):
    """Intersection of the piecewise-linear DET curve with p_miss == p_fa, segment by segment."""
    for k in range(len(pm)):
        if pm[k] == pf[k]:
            return pm[k]
        if k and pm[k - 1] < pf[k - 1] and pm[k] > pf[k]:
            # solve pm(a) = pf(a) on the segment k-1 -> k
            a = (pf[k - 1] - pm[k - 1]) / ((pm[k] - pm[k - 1]) - (pf[k] - pf[k - 1]))
            return pm[k - 1] + a * (pm[k] - pm[k - 1])
    raise AssertionError("no crossing")


def test_perfect_separation_is_zero():
    scores = [0.9, 0.8, 0.7, 0.2, 0.1, -0.3]
    labels = [1, 1, 1, 0, 0, 0]
    eer, thr = compute_eer(scores, labels)
    assert eer == 0.0
    assert 0.2 < thr <= 0.7  # any threshold in (max non-target, min target] separates
    assert compute_min_dcf(scores, labels)[0] == 0.0
    assert compute_min_dcf(scores, labels, p_target=0.05)[0] == 0.0


def test_reversed_scores_give_eer_one():
    assert compute_eer([0.0, 1.0], [1, 0])[0] == 1.0


def test_hand_computed_eer_and_min_dcf():
    # targets 0.9, 0.4; non-targets 0.6, 0.1. At t = 0.6: one target missed (1/2), one
    # non-target accepted (1/2): EER = 0.5 exactly at an operating point.
    scores, labels = [0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]
    assert compute_eer(scores, labels) == (0.5, 0.6)
    # p = 0.5: C_det/C_def = P_miss + P_fa = 1, .5, 1, .5, 1 over t = .1, .4, .6, .9, >.9;
    # the minimum 0.5 is first reached at 0.4 (lowest threshold wins ties, as in Kaldi)
    assert compute_min_dcf(scores, labels, p_target=0.5) == (0.5, 0.4)
    # p = 0.01: C_det = .01 * P_miss + .99 * P_fa; best at t = 0.9 -> .005 / .01
    dcf, thr = compute_min_dcf(scores, labels, p_target=0.01)
    assert dcf == pytest.approx(0.5) and thr == 0.9


def test_interpolated_eer():
    # targets 0, 1; non-target 1. Points (P_miss, P_fa): t=0 (0, 1); t=1 (.5, 1); t>1 (1, 0).
    # Crossing on the last segment: .5 + a*.5 = 1 - a  ->  a = 1/3, EER = 2/3.
    eer, thr = compute_eer([0.0, 1.0, 1.0], [1, 1, 0])
    assert eer == pytest.approx(2 / 3)
    assert thr == 1.0  # the operating point nearer the crossing


def test_ties_are_accepted_together():
    # all scores equal: accept-all (0, 1) and reject-all (1, 0) are the only points
    eer, _ = compute_eer([0.5] * 6, [1, 1, 1, 0, 0, 0])
    assert eer == pytest.approx(0.5)
    dcf, thr = compute_min_dcf([0.5] * 6, [1, 1, 1, 0, 0, 0], p_target=0.01)
    assert dcf == pytest.approx(1.0)  # nothing beats always rejecting
    assert thr > 0.5  # ... which is what the returned threshold does
    pm, pf, t = error_rates([0.5] * 4, [1, 0, 1, 0])
    np.testing.assert_array_equal(pm, [0.0, 1.0])
    np.testing.assert_array_equal(pf, [1.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    n_tar, n_non = 60, 240
    # rounded to create many ties between and within classes
    scores = np.round(np.concatenate([rng.normal(1, 1, n_tar), rng.normal(0, 1, n_non)]), 1)
    labels = np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)]
    perm = rng.permutation(scores.size)
    scores, labels = scores[perm], labels[perm]

    pm, pf, thr = _brute_points(scores, labels)
    pm2, pf2, thr2 = error_rates(scores, labels)
    np.testing.assert_allclose(pm2, pm)
    np.testing.assert_allclose(pf2, pf)
    np.testing.assert_array_equal(thr2[:-1], thr[:-1])
    assert thr2[-1] > scores.max()

    eer, eer_thr = compute_eer(scores, labels)
    assert eer == pytest.approx(_brute_eer(pm, pf), abs=1e-12)
    # the interpolated EER lies between the best half-total and the best worst-case error
    assert np.min((pm + pf) / 2) - 1e-12 <= eer <= np.min(np.maximum(pm, pf)) + 1e-12
    # the reported threshold is one of the two operating points around the crossing
    first_past = int(np.argmax(pm - pf >= 0))
    assert eer_thr in (thr2[first_past], thr2[first_past - 1])

    for p in (0.01, 0.05, 0.5):
        c_det = pm * p + pf * (1 - p)
        dcf, dcf_thr = compute_min_dcf(scores, labels, p_target=p)
        assert dcf == pytest.approx(c_det.min() / min(p, 1 - p), abs=1e-12)
        # applying the returned threshold reproduces the minimum cost
        acc = scores >= dcf_thr
        cost = p * np.mean(~acc[labels]) + (1 - p) * np.mean(acc[~labels])
        assert cost / min(p, 1 - p) == pytest.approx(dcf, abs=1e-12)


def test_gaussian_closed_form():
    # equal-variance Gaussians N(d, 1) vs N(0, 1): EER = Phi(-d / 2)
    rng = np.random.default_rng(0)
    d, n = 2.0, 200_000
    scores = np.concatenate([rng.normal(d, 1, n), rng.normal(0, 1, n)])
    labels = np.r_[np.ones(n), np.zeros(n)]
    eer, thr = compute_eer(scores, labels)
    assert eer == pytest.approx(norm.cdf(-d / 2), abs=3e-3)
    assert thr == pytest.approx(d / 2, abs=0.02)
    # minDCF at p=0.01: minimise over the threshold analytically on a fine grid
    t = np.linspace(-2, 6, 20001)
    expected = np.min(0.01 * norm.cdf(t - d) + 0.99 * norm.sf(t)) / 0.01
    assert compute_min_dcf(scores, labels, p_target=0.01)[0] == pytest.approx(expected, abs=0.03)


def test_verification_metrics_keys_and_counts():
    m = verification_metrics([0.9, 0.4, 0.6, 0.1, 0.0], [True, True, False, False, False])
    for key in ("eer", "eer_threshold", "min_dcf_0.01", "min_dcf_0.05"):
        assert isinstance(m[key], float)
    assert (m["num_trials"], m["num_target"], m["num_nontarget"]) == (5, 2, 3)
    assert 0.0 <= m["min_dcf_0.01"] <= 1.0 and 0.0 <= m["min_dcf_0.05"] <= 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 1], "no non-target"),
        ([0.1, 0.2], [1], "differ in length"),
        ([0.1, float("nan")], [1, 0], "NaN"),
        ([0.1, 0.2], [1, 2], "labels must be"),
    ],
)
def test_bad_input_raises(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_eer(scores, labels)
    with pytest.raises(ValueError, match=match):
        verification_metrics(scores, labels)

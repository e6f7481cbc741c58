"""Evaluation metrics (numpy, no I/O).

Speaker verification
--------------------
Trials are ``scores: (N,) float`` (higher = more likely the same speaker) and ``labels: (N,)``
(1/True = target, same speaker; 0/False = non-target). A threshold ``t`` accepts a trial iff
``score >= t``. The operating points are taken at every distinct score plus one threshold just
above the maximum (reject everything), so ties are handled exactly: tied trials are accepted or
rejected together. Everything is one sort plus ``searchsorted``: O(N log N).

- ``compute_eer``: the equal error rate where the DET curve (miss rate vs false-alarm rate,
  linearly interpolated between operating points) crosses ``P_miss == P_fa``; the same convex
  interpolation as WeSpeaker ``wespeaker/utils/score_metrics.py`` and the ``brentq`` on
  ``interp1d(fpr, tpr)`` used by the VoxCeleb baselines.
- ``compute_min_dcf``: normalised minimum detection cost, as NIST SRE and Kaldi
  ``egs/sre08/v1/sid/compute_min_dcf.py`` define it:
  ``min_t [C_miss * P_miss(t) * p + C_fa * P_fa(t) * (1 - p)] / min(C_miss * p, C_fa * (1 - p))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _check_trials(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if s.shape != lab.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {lab.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values; check the embeddings")
    if lab.dtype != np.bool_:
        if not np.all((lab == 0) | (lab == 1)):
            raise ValueError("labels must be 1/True (target) or 0/False (non-target)")
        lab = lab.astype(bool)
    n_tar = int(lab.sum())
    if n_tar == 0:
        raise ValueError(
            f"no target (same-speaker) trials among {lab.size}; EER/minDCF need both kinds"
        )
    if n_tar == lab.size:
        raise ValueError(
            f"no non-target (different-speaker) trials among {lab.size}; EER/minDCF need both kinds"
        )
    return s, lab


def error_rates(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points ``(p_miss, p_fa, thresholds)``, thresholds ascending.

    ``thresholds`` = the distinct scores plus ``nextafter(max score, +inf)``;
    ``p_miss[k]`` = fraction of target scores ``< thresholds[k]`` (non-decreasing, 0 -> 1) and
    ``p_fa[k]`` = fraction of non-target scores ``>= thresholds[k]`` (non-increasing, 1 -> 0).
    """
    s, lab = _check_trials(scores, labels)
    tar = np.sort(s[lab])
    non = np.sort(s[~lab])
    uniq = np.unique(s)
    thresholds = np.append(uniq, np.nextafter(uniq[-1], np.inf))
    p_miss = np.searchsorted(tar, thresholds, side="left") / tar.size
    p_fa = 1.0 - np.searchsorted(non, thresholds, side="left") / non.size
    return p_miss, p_fa, thresholds


def compute_eer(scores: Any, labels: Any) -> tuple[float, float]:
    """Equal error rate in [0, 1] and its threshold (accept iff ``score >= threshold``).

    The EER is where the piecewise-linear DET curve crosses ``p_miss == p_fa``; the threshold is
    that of the operating point nearest the crossing. Raises ``ValueError`` without both target
    and non-target trials.
    """
    return _eer(*error_rates(scores, labels))


def _eer(p_miss: np.ndarray, p_fa: np.ndarray, thr: np.ndarray) -> tuple[float, float]:
    d = p_miss - p_fa  # non-decreasing from -1 (accept all) to +1 (reject all)
    i = int(np.argmax(d >= 0))  # first operating point at or past the crossing; i >= 1
    if d[i] == 0:
        return float(p_miss[i]), float(thr[i])
    a = -d[i - 1] / (d[i] - d[i - 1])  # fraction of the segment (i-1 -> i) at the crossing
    eer = p_miss[i - 1] + a * (p_miss[i] - p_miss[i - 1])
    return float(eer), float(thr[i] if a >= 0.5 else thr[i - 1])


def compute_min_dcf(
    scores: Any,
    labels: Any,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Normalised minimum detection cost and its threshold (NIST SRE / Kaldi definition).

    ``C_det(t) = c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)``, minimised
    over thresholds (the lowest one on ties, as Kaldi) and divided by
    ``C_default = min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of always rejecting
    or always accepting; the result is therefore in [0, 1].
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    return _min_dcf(*error_rates(scores, labels), p_target, c_miss, c_fa)


def _min_dcf(
    p_miss: np.ndarray,
    p_fa: np.ndarray,
    thr: np.ndarray,
    p_target: float,
    c_miss: float,
    c_fa: float,
) -> tuple[float, float]:
    c_det = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    k = int(np.argmin(c_det))
    c_def = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(c_det[k] / c_def), float(thr[k])


def verification_metrics(scores: Any, labels: Any) -> dict[str, float | int]:
    """EER and minDCF at p_target 0.01 and 0.05 (C_miss = C_fa = 1), plus trial counts.

    Keys: ``eer``, ``eer_threshold``, ``min_dcf_0.01``, ``min_dcf_0.01_threshold``,
    ``min_dcf_0.05``, ``min_dcf_0.05_threshold``, ``num_trials``, ``num_target``,
    ``num_nontarget``.
    """
    s, lab = _check_trials(scores, labels)
    points = error_rates(s, lab)  # one sort shared by all three metrics
    eer, eer_thr = _eer(*points)
    out: dict[str, float | int] = {"eer": eer, "eer_threshold": eer_thr}
    for p in (0.01, 0.05):
        dcf, dcf_thr = _min_dcf(*points, p, 1.0, 1.0)
        out[f"min_dcf_{p}"] = dcf
        out[f"min_dcf_{p}_threshold"] = dcf_thr
    n_tar = int(lab.sum())
    out.update(num_trials=int(lab.size), num_target=n_tar, num_nontarget=int(lab.size - n_tar))
    return out

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


# ---------------------------------------------------------------------------------------------
# Speaker diarization: DER
#
# Diarization error rate as NIST's md-eval (Rich Transcription evaluation) and pyannote.metrics
# ``DiarizationErrorRate`` define it: ``(missed + false alarm + confusion) / total``, where at
# each instant with ``N_ref`` reference and ``N_hyp`` hypothesis speakers, of which ``N_correct``
# reference speakers are matched by their mapped hypothesis speaker, the instant adds
# ``max(0, N_ref - N_hyp)`` missed, ``max(0, N_hyp - N_ref)`` false-alarm and
# ``min(N_ref, N_hyp) - N_correct`` confused speaker-seconds, and ``total`` adds ``N_ref``
# (overlapped speech counts once per speaker). The one-to-one speaker mapping maximises the total
# reference/hypothesis co-occurrence (Hungarian algorithm). It is computed exactly on the
# timeline of all segment, UEM and collar boundaries (no frame quantisation).
#
# Collar convention: ``collar`` is the md-eval one, *one side*: ``[t - collar, t + collar]`` is
# removed around every reference segment boundary ``t``. pyannote's ``collar`` is the total
# width, so ``collar=0.25`` here equals pyannote's ``DiarizationErrorRate(collar=0.5)``.

from dataclasses import dataclass as _dataclass  # noqa: E402


@_dataclass(frozen=True)
class DERResult:
    """Diarization error rate and its parts: ratios of ``total`` and the same in seconds."""

    der: float  # (missed + false_alarm + confusion) / total
    missed: float  # missed speech / total
    false_alarm: float  # false-alarm speech / total
    confusion: float  # speaker confusion / total
    total: float  # scored reference speech, speaker-seconds (overlap counted per speaker)
    missed_seconds: float
    false_alarm_seconds: float
    confusion_seconds: float
    correct_seconds: float  # reference speaker-seconds attributed to the mapped hyp speaker
    mapping: dict[str, str]  # hypothesis label -> reference label (optimal one-to-one)


Turn = tuple[float, float, str]


def _check_turns(turns: Any, name: str) -> list[Turn]:
    out = []
    for i, t in enumerate(turns):
        try:
            start, end, spk = float(t[0]), float(t[1]), str(t[2])
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{name}[{i}] must be (start, end, speaker), got {t!r}") from exc
        if not (np.isfinite(start) and np.isfinite(end)) or end < start:
            raise ValueError(f"{name}[{i}] has end < start or a non-finite time: {t!r}")
        if end > start:  # empty turns carry no speech
            out.append((start, end, spk))
    return out


def _activity(turns: list[Turn], bounds: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Speakers and ``(S, M-1) bool``: speaker active in each elementary interval of ``bounds``.

    A speaker's own overlapping turns count once (they are one speaker talking).
    """
    labels = sorted({t[2] for t in turns})
    index = {s: k for k, s in enumerate(labels)}
    act = np.zeros((len(labels), max(bounds.size - 1, 0)), dtype=bool)
    for start, end, spk in turns:
        # every boundary is in `bounds`, so searchsorted is exact
        act[index[spk], np.searchsorted(bounds, start) : np.searchsorted(bounds, end)] = True
    return labels, act


def _mask(regions: list[tuple[float, float]], bounds: np.ndarray) -> np.ndarray:
    m = np.zeros(max(bounds.size - 1, 0), dtype=bool)
    for start, end in regions:
        m[np.searchsorted(bounds, start) : np.searchsorted(bounds, end)] = True
    return m


def diarization_error_rate(
    reference: list[tuple[float, float, str]],
    hypothesis: list[tuple[float, float, str]],
    *,
    collar: float = 0.0,
    uem: list[tuple[float, float]] | None = None,
    skip_overlap: bool = False,
) -> DERResult:
    """DER of ``hypothesis`` against ``reference``; both are ``(start, end, speaker)`` in seconds.

    ``collar``: seconds removed on *each side* of every reference segment boundary (md-eval
    convention; pyannote's ``collar`` is twice this). ``uem``: scored regions ``(start, end)``;
    ``None`` scores everything. ``skip_overlap``: do not score regions where the reference has
    more than one speaker. When nothing is scored (``total == 0``) the DER is 0 without errors
    and 1 with (pyannote's convention).
    """
    if collar < 0:
        raise ValueError(f"collar must be >= 0 seconds, got {collar}")
    ref = _check_turns(reference, "reference")
    hyp = _check_turns(hypothesis, "hypothesis")
    uem_regions = None
    if uem is not None:
        uem_regions = [(float(s), float(e)) for s, e in uem]
        if any(e < s for s, e in uem_regions):
            raise ValueError("uem regions must have end >= start")
    pts = [t[0] for t in ref + hyp] + [t[1] for t in ref + hyp]
    collars = []
    if collar > 0:
        collars = [(b - collar, b + collar) for t in ref for b in (t[0], t[1])]
        pts += [c for pair in collars for c in pair]
    if uem_regions is not None:
        pts += [c for pair in uem_regions for c in pair]
    bounds = np.unique(np.asarray(pts, dtype=np.float64))
    ref_labels, ref_act = _activity(ref, bounds)
    hyp_labels, hyp_act = _activity(hyp, bounds)
    scored = np.ones(max(bounds.size - 1, 0), dtype=bool)
    if uem_regions is not None:
        scored &= _mask(uem_regions, bounds)
    if collars:
        scored &= ~_mask(collars, bounds)
    n_ref = ref_act.sum(axis=0)
    if skip_overlap:
        scored &= n_ref <= 1
    dur = np.diff(bounds) * scored  # (M-1,) seconds scored per elementary interval
    n_hyp = hyp_act.sum(axis=0)

    mapping: dict[str, str] = {}
    n_correct = np.zeros_like(dur)
    if ref_labels and hyp_labels:
        from scipy.optimize import linear_sum_assignment

        cooc = (ref_act * dur) @ hyp_act.T.astype(np.float64)  # (S_ref, S_hyp) seconds together
        rows, cols = linear_sum_assignment(cooc, maximize=True)
        for r, h in zip(rows, cols, strict=True):
            if cooc[r, h] > 0:
                mapping[hyp_labels[h]] = ref_labels[r]
                n_correct += ref_act[r] & hyp_act[h]
    total = float(np.sum(n_ref * dur))
    missed = float(np.sum(np.maximum(n_ref - n_hyp, 0) * dur))
    false_alarm = float(np.sum(np.maximum(n_hyp - n_ref, 0) * dur))
    confusion = float(np.sum((np.minimum(n_ref, n_hyp) - n_correct) * dur))
    correct = float(np.sum(n_correct * dur))
    error = missed + false_alarm + confusion
    if total > 0:
        ratios = (error / total, missed / total, false_alarm / total, confusion / total)
    else:
        ratios = (1.0 if error > 0 else 0.0, 0.0, 0.0, 0.0)
    return DERResult(
        der=ratios[0],
        missed=ratios[1],
        false_alarm=ratios[2],
        confusion=ratios[3],
        total=total,
        missed_seconds=missed,
        false_alarm_seconds=false_alarm,
        confusion_seconds=confusion,
        correct_seconds=correct,
        mapping=mapping,
    )


# ---------------------------------------------------------------------------------------------
# Signal quality (separation, extraction, codecs)
#
# ``est`` / ``ref`` / ``mix`` are 1-D waveforms ``(T,)`` of the same length (numpy or anything
# ``np.asarray`` takes), in [-1, 1]. SI-SDR follows Le Roux et al. 2019 ("SDR - half-baked or well
# done?", arXiv 1811.02508): zero-mean, optimal scaling of the reference. PESQ is ITU-T P.862.2
# wide-band through the ``pesq`` package (16 kHz only: other rates go through
# ``models.waveform.resample``); STOI is Taal et al. 2011 through ``pystoi`` (it resamples to
# 10 kHz itself). ``signal_quality`` is the one evaluator the codec, TSE and baseline jobs share.
# The heavy back ends are imported inside the functions so the verification metrics above stay
# numpy-only.

QUALITY_SR = 16000  # Hz: PESQ-WB and STOI are always scored at this rate


def _signal_pair(est: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(est, dtype=np.float64).reshape(-1)
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    if e.shape != r.shape:
        raise ValueError(f"signals differ in length: {e.size} vs {r.size} samples; align them")
    if e.size == 0:
        raise ValueError("empty signal")
    if not (np.all(np.isfinite(e)) and np.all(np.isfinite(r))):
        raise ValueError("signals contain NaN or infinite samples")
    return e, r


def si_sdr(est: Any, ref: Any, eps: float = 1e-12) -> float:
    """Scale-invariant SDR of ``est`` against ``ref`` in dB (higher is better)."""
    e, r = _signal_pair(est, ref)
    e, r = e - e.mean(), r - r.mean()
    alpha = np.dot(e, r) / (np.dot(r, r) + eps)
    target = alpha * r
    noise = e - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def si_sdr_improvement(est: Any, mix: Any, ref: Any) -> float:
    """SI-SDRi in dB: ``si_sdr(est, ref) - si_sdr(mix, ref)``."""
    return si_sdr(est, ref) - si_sdr(mix, ref)


def pesq_wb(est: Any, ref: Any, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.64) of ``est`` against ``ref``, both at
    ``sample_rate`` Hz (resampled to 16 kHz). Returns NaN, with a logged warning, when PESQ
    cannot score the pair (e.g. no speech in the reference)."""
    import logging

    from pesq import PesqError, pesq

    from models.waveform import resample

    e, r = _signal_pair(est, ref)
    e, r = resample(e, sample_rate, QUALITY_SR), resample(r, sample_rate, QUALITY_SR)
    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # pesq normalises by max |x|
            return float(pesq(QUALITY_SR, r, e, "wb"))
    except PesqError as exc:
        logging.getLogger(__name__).warning("PESQ failed (%s: %s); returning NaN", type(exc), exc)
        return float("nan")


def stoi(est: Any, ref: Any, sample_rate: int) -> float:
    """Short-time objective intelligibility (classic, not extended) in [0, 1]."""
    from pystoi import stoi as _stoi

    e, r = _signal_pair(est, ref)
    return float(_stoi(r, e, int(sample_rate), extended=False))


def signal_quality(est: Any, ref: Any, sample_rate: int) -> dict[str, float]:
    """The signal-quality evaluator: ``est`` scored against ``ref`` (both ``(T,)`` at
    ``sample_rate`` Hz, same length) -> ``{"si_sdr": dB, "pesq": MOS-LQO, "stoi": [0, 1]}``.

    SI-SDR is computed at ``sample_rate``; both signals are resampled once to ``QUALITY_SR``
    (16 kHz) for PESQ-WB and STOI, so every job reports them at the same rate. ``pesq`` is NaN
    (logged) for a pair PESQ cannot score.
    """
    from models.waveform import resample

    e, r = _signal_pair(est, ref)
    e16, r16 = resample(e, sample_rate, QUALITY_SR), resample(r, sample_rate, QUALITY_SR)
    return {
        "si_sdr": si_sdr(e, r),
        "pesq": pesq_wb(e16, r16, QUALITY_SR),
        "stoi": stoi(e16, r16, QUALITY_SR),
    }


def absent_suppression_db(est: Any, mix: Any, eps: float = 1e-12) -> float:
    """For target-absent inputs: ``10 log10(energy(mix) / energy(est))`` dB (higher = the
    extractor silenced more of the mixture)."""
    e, m = _signal_pair(est, mix)
    return float(10.0 * np.log10((np.dot(m, m) + eps) / (np.dot(e, e) + eps)))


def mel_distance(est: Any, ref: Any, sample_rate: int, n_mels: int = 80) -> float:
    """Mean L1 distance between natural-log mel spectrograms (magnitudes floored at 1e-5).

    ``n_fft`` is the next power of two of ``sample_rate / 24`` (2048 at 44.1/48 kHz, 1024 at
    16-24 kHz, 512 at 8 kHz: 40-64 ms windows), hop ``n_fft / 4``, mel bands up to Nyquist."""
    import torch
    import torchaudio

    e, r = _signal_pair(est, ref)
    n_fft = 1 << max(8, int(np.ceil(np.log2(sample_rate / 24.0))))
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=int(sample_rate),
        n_fft=n_fft,
        hop_length=n_fft // 4,
        n_mels=int(n_mels),
        power=1.0,
    )
    x = torch.from_numpy(np.stack([e, r]).astype(np.float32))
    spec = mel(x).clamp_min(1e-5).log()  # (2, n_mels, frames)
    return float((spec[0] - spec[1]).abs().mean())

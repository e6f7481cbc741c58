"""Signal-level steps of dynamic mixing: RIR preparation (direct path, early part, trimmed tail),
speed perturbation of only the span a segment needs, power and dB levels, per-stage timing.

Numpy/scipy only and stateless apart from :class:`StageClock`; ``datasets.mixing.DynamicMixer``
composes them into mixtures.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from datasets.mixing_config import MixingError
from models.waveform import resample

SILENT_POWER = 1e-12  # power below which a signal counts as silent


@dataclass(frozen=True)
class Rir:
    full: np.ndarray  # (L,) normalised to a unit maximum, -60 dB tail trimmed
    early: np.ndarray  # (peak + early + 1,) the direct path and early reflections
    peak: int  # direct-path index


def prepare_rir(rir: np.ndarray, early_samples: int, sample_rate: int) -> Rir:
    rir = np.asarray(rir, dtype=np.float64).reshape(-1)
    mag = np.abs(rir)
    if rir.size == 0 or mag.max() == 0:
        raise MixingError("an RIR in the bank is empty or silent; remove it from the bank")
    rir = rir / mag.max()
    # Direct path: the first arrival reaching half the maximum, refined to its local peak
    # within 1 ms; a strong later reflection (a floor bounce can beat the direct sound) must
    # not be mistaken for it, or "early" would start late.
    onset = int(np.flatnonzero(mag >= 0.5 * mag.max())[0])
    peak = onset + int(np.argmax(mag[onset : onset + max(1, sample_rate // 1000)]))
    # Energy after the point where the remaining tail is 60 dB down is inaudible under the
    # mixture but costs convolution time, so it is dropped.
    tail = np.cumsum(np.square(rir)[::-1])[::-1]
    keep = max(int(np.searchsorted(-tail, -1e-6 * tail[0])), peak + early_samples + 1)
    full = rir[: min(keep, rir.size)].astype(np.float32)
    return Rir(full, full[: peak + early_samples + 1].copy(), peak)


def mean_power(x: np.ndarray) -> float:
    """Mean square (BLAS dot: no temporary; float32 accumulation is ~1e-6 relative)."""
    return float(np.dot(x, x)) / x.size if x.size else 0.0


def to_db(ratio: float) -> float | None:
    return None if ratio <= 0 or not np.isfinite(ratio) else float(10 * np.log10(ratio))


Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> samples


def perturbed_length(n: int, factor: Fraction) -> int:
    """Length of an ``n``-sample signal played ``factor`` times faster (as ``resample`` gives)."""
    return -(-n * factor.denominator // factor.numerator)


def read_perturbed(read: Reader, n: int, factor: Fraction, lo: int, hi: int) -> np.ndarray:
    """Samples ``[lo, hi)`` of ``y(m) = x(m * factor)`` (``x`` of length ``n`` read by ``read``),
    zero outside ``[0, perturbed_length)``; only the input span they need is read and resampled.
    """
    out = np.zeros(hi - lo, np.float32)
    p, q = factor.numerator, factor.denominator
    a, b = max(lo, 0), min(hi, perturbed_length(n, factor))
    if a >= b:
        return out
    if p == q:
        out[a - lo : b - lo] = read(a, b)
        return out
    # The polyphase filter (models.waveform.resample) reaches 10 * max(p, q) / q input samples either side; starting the
    # span on a multiple of p puts its output grid on the full signal's grid (offset i0 * q / p).
    margin = 10 * max(p, q) // q + 2
    i0 = max(0, (a * p // q - margin) // p * p)
    i1 = min(n, -(-b * p // q) + margin)
    ys = resample(read(i0, i1), p, q)  # the one resampler: polyphase, from rate p to rate q
    g0 = i0 // p * q
    out[a - lo : b - lo] = ys[a - g0 : b - g0]
    return out


class StageClock:
    """Seconds spent per stage, summed over calls (what ``datasets.mixing.benchmark_mixing``
    reports)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0

"""Signal-quality metrics (models/metrics.py, "signal quality" section) on known signals."""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import pytest

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models.metrics import (  # noqa: E402
    absent_suppression_db,
    mel_distance,
    pesq_wb,
    si_sdr,
    si_sdr_improvement,
    signal_quality,
    stoi,
)
from models.waveform import resample  # noqa: E402

SR = 48000


def voiced(seconds: float = 3.0, sr: int = SR) -> np.ndarray:
    """A speech-like signal: 19 harmonics of a gliding 120-160 Hz pitch, syllable-rate bursts."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / sr
    env = np.clip(0.5 + 0.5 * np.sin(2 * np.pi * 3 * t), 0, None) ** 2
    return (0.1 * env * sum(np.sin(k * phase) / k for k in range(1, 20))).astype(np.float32)


def noise_at(ref: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """White noise orthogonal to ``ref`` (zero-mean) at ``snr_db`` relative to it."""
    r = ref - ref.mean()
    n = np.random.default_rng(seed).standard_normal(ref.size)
    n -= n.mean()
    n -= np.dot(n, r) / np.dot(r, r) * r
    return n * math.sqrt(np.dot(r, r) / np.dot(n, n) / 10 ** (snr_db / 10))


def test_si_sdr_known_values():
    ref = voiced(1.0)
    assert si_sdr(0.25 * ref, ref) > 100, "a scaled copy is perfect"
    for snr in (-5.0, 0.0, 12.0):
        assert si_sdr(ref + noise_at(ref, snr), ref) == pytest.approx(snr, abs=1e-4)
    # generic (non-orthogonal) noise lands near its SNR too
    n = np.random.default_rng(1).standard_normal(ref.size)
    n *= math.sqrt(np.mean(ref**2) / np.mean(n**2) / 10)  # 10 dB
    assert si_sdr(ref + n, ref) == pytest.approx(10.0, abs=0.3)
    with pytest.raises(ValueError, match="length"):
        si_sdr(ref[:-1], ref)


def test_si_sdr_improvement():
    ref = voiced(1.0)
    mix = ref + noise_at(ref, 0.0, seed=2)
    est = ref + noise_at(ref, 15.0, seed=3)
    assert si_sdr_improvement(est, mix, ref) == pytest.approx(15.0, abs=1e-4)
    assert si_sdr_improvement(mix, mix, ref) == pytest.approx(0.0, abs=1e-9)


def test_pesq_wb():
    ref = voiced(2.0)
    assert pesq_wb(ref, ref, SR) > 4.0
    noisy = pesq_wb(ref + noise_at(ref, 0.0), ref, SR)
    assert 1.0 <= noisy < 2.0
    assert pesq_wb(ref[::3], ref[::3], 16000) > 4.0  # 16 kHz input is not resampled


def test_pesq_wb_silence_gives_nan_and_warns(caplog):
    silent = np.zeros(SR, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="models.metrics"):
        assert math.isnan(pesq_wb(silent, silent, SR))
    assert "PESQ failed" in caplog.text


def test_stoi():
    ref = voiced()
    assert stoi(ref, ref, SR) == pytest.approx(1.0, abs=1e-6)
    assert stoi(ref + noise_at(ref, -5.0), ref, SR) < 0.9


def test_signal_quality_scores_at_16k():
    ref = voiced(2.0)
    noisy = ref + noise_at(ref, 5.0)
    q = signal_quality(noisy, ref, SR)
    assert set(q) == {"si_sdr", "pesq", "stoi"}
    assert q["si_sdr"] == pytest.approx(5.0, abs=1e-3)  # at the input rate
    n16, r16 = resample(noisy, SR, 16000), resample(ref, SR, 16000)
    assert q["pesq"] == pytest.approx(pesq_wb(n16, r16, 16000), abs=1e-6)
    assert q["stoi"] == pytest.approx(stoi(n16, r16, 16000), abs=1e-6)
    perfect = signal_quality(ref, ref, SR)
    assert perfect["pesq"] > 4.0 and perfect["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert q["pesq"] < perfect["pesq"] and q["stoi"] < perfect["stoi"]
    with pytest.raises(ValueError, match="length"):
        signal_quality(ref[:-1], ref, SR)


def test_absent_suppression_db():
    mix = voiced(1.0)
    assert absent_suppression_db(0.1 * mix, mix) == pytest.approx(20.0, abs=1e-6)
    assert absent_suppression_db(mix, mix) == pytest.approx(0.0, abs=1e-9)


def test_mel_distance():
    ref = voiced(1.0)
    assert mel_distance(ref, ref, SR) == 0.0
    near = mel_distance(ref + noise_at(ref, 30.0), ref, SR)
    far = mel_distance(ref + noise_at(ref, 0.0), ref, SR)
    assert 0 < near < far
    assert mel_distance(ref[::3], ref[::3], 16000, n_mels=40) == 0.0

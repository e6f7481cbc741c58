"""datasets.augment: SNR accuracy, reverberation, speed, SpecAugment, banks, labels."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import sys

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest
import torch

from datasets.audio import write_audio
from datasets.augment import (
    AugmentConfig,
    Augmenter,
    add_noise,
    reverberate,
    spec_augment,
    speed_label,
    speed_perturb,
)
from datasets.banks import MemoryBank, ShardBank, open_bank
from datasets.hdf5_shards import pack_shards
from datasets.manifests import scan_files
from models.config import ConfigError, from_dict, to_dict
from tests.conftest import REAL, needs_real


def _speech_like(n: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.3 * env * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(
        np.float32
    )


@pytest.mark.parametrize("snr", [0.0, 5.0, 12.5, 20.0])
def test_add_noise_hits_snr(snr):
    rng = np.random.default_rng(1)
    wav = _speech_like()
    noise = rng.standard_normal(5000).astype(np.float32)  # shorter: gets repeated
    out = add_noise(wav, noise, snr, rng)
    assert out.shape == wav.shape and out.dtype == np.float32
    added = out - wav
    measured = 10 * np.log10(
        np.mean(wav.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2)
    )
    assert abs(measured - snr) < 0.5


def test_add_noise_loud_mix_is_scaled_not_clipped():
    rng = np.random.default_rng(0)
    wav = np.full(1000, 0.9, np.float32)
    out = add_noise(wav, rng.standard_normal(1000), -5.0, rng)
    assert np.abs(out).max() <= 0.99 + 1e-6
    assert np.array_equal(add_noise(wav, np.zeros(100), 5.0, rng), wav)


def test_reverberate_keeps_length_level_and_alignment():
    wav = _speech_like()
    rir = np.zeros(4000, np.float32)
    rir[200] = 0.5  # pre-delay of 200 samples; direct-path peak 0.5
    rir[200:] += (
        0.05 * np.exp(-np.arange(3800) / 800) * np.random.default_rng(0).standard_normal(3800)
    )
    out = reverberate(wav, rir)
    assert out.shape == wav.shape
    assert np.sqrt(np.mean(out**2)) == pytest.approx(np.sqrt(np.mean(wav**2)), rel=1e-3)
    # aligned to the direct path: strongly correlated at lag 0, not delayed by 200 samples
    assert np.corrcoef(out, wav)[0, 1] > 0.5
    delta = np.zeros(1, np.float32)
    delta[0] = 1.0
    np.testing.assert_allclose(reverberate(wav, delta), wav, atol=1e-6)


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.95])
def test_speed_perturb_length(factor):
    wav = _speech_like(16000)
    out = speed_perturb(wav, factor)
    assert abs(len(out) - len(wav) / factor) <= 1
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert abs(np.argmax(spec) * 16000 / len(out) - 220 * factor) < 3  # pitch scales too
    assert np.array_equal(speed_perturb(wav, 1.0), wav)


def test_speed_labels_and_factor_order():
    cfg = AugmentConfig(speed_factors=(0.9, 1.0, 1.1))
    assert cfg.ordered_speed_factors == (1.0, 0.9, 1.1)
    assert (
        speed_label(3, 0, 10) == 3 and speed_label(3, 1, 10) == 13 and speed_label(3, 2, 10) == 23
    )
    with pytest.raises(ValueError):
        speed_label(10, 0, 10)
    aug = Augmenter(
        AugmentConfig(noise_prob=0.0, reverb_prob=0.0, speed_factors=(0.9, 1.0, 1.1)), [], []
    )
    rng = np.random.default_rng(0)
    wav = _speech_like()
    seen = set()
    for _ in range(30):
        out, label = aug.augment_labelled(wav, 2, 5, rng)
        idx = (label - 2) // 5
        seen.add(idx)
        assert abs(len(out) - len(wav) / aug.speed_factors[idx]) <= 1
    assert seen == {0, 1, 2}


def test_config_strict_and_validated():
    cfg = from_dict(AugmentConfig, {"speed_factors": [1.0, 0.9, 1.1], "snr_db": [5, 10]})
    assert cfg.speed_factors == (1.0, 0.9, 1.1) and cfg.snr_db == (5.0, 10.0)
    assert from_dict(AugmentConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError):
        from_dict(AugmentConfig, {"noise_probability": 0.5})
    with pytest.raises(ConfigError):
        from_dict(AugmentConfig, {"speed_factors": [0.9, 1.1]})  # no 1.0
    with pytest.raises(ConfigError):
        from_dict(AugmentConfig, {"snr_db": [15, 0]})


def test_spec_augment_masks_requested_regions():
    feats = torch.randn(3, 100, 80) + 10.0  # no natural zeros
    out, mask = spec_augment(
        feats, np.random.default_rng(0), freq_masks=2, freq_mask_width=10, time_masks=2,
        time_mask_width=20, return_mask=True,
    )  # fmt: skip
    assert out.shape == feats.shape
    assert torch.equal(out == 0, mask)
    assert torch.equal(out[~mask], feats[~mask])
    for i in range(3):
        full_bins = mask[i].all(dim=0)  # frequency masks span all frames
        full_frames = mask[i].all(dim=1)  # time masks span all bins
        assert torch.equal(mask[i], full_bins[None, :] | full_frames[:, None])
        assert full_bins.sum() <= 20 and full_frames.sum() <= 40
    # reproducible with a seed, for numpy and torch generators; (T, F) input works
    a = spec_augment(feats[0], np.random.default_rng(5))
    b = spec_augment(feats[0], np.random.default_rng(5))
    assert torch.equal(a, b) and a.shape == (100, 80)
    c = spec_augment(feats, torch.Generator().manual_seed(1), time_mask_width=50)
    assert torch.equal(c, spec_augment(feats, torch.Generator().manual_seed(1), time_mask_width=50))
    none = spec_augment(feats, np.random.default_rng(0), freq_masks=0, time_masks=0)
    assert torch.equal(none, feats)


def test_augmenter_reproducible_and_applies_noise(tmp_path):
    noise = np.random.default_rng(9).standard_normal(8000).astype(np.float32) * 0.1
    rir = np.r_[1.0, np.zeros(99), 0.3 * np.ones(100)].astype(np.float32)
    aug = Augmenter(AugmentConfig(noise_prob=1.0, reverb_prob=0.5, snr_db=(5, 5)), [noise], [rir])
    wav = _speech_like()
    a = aug(wav, np.random.default_rng(3))
    b = aug(wav, np.random.default_rng(3))
    assert np.array_equal(a, b) and a.shape == wav.shape and not np.array_equal(a, wav)
    off = Augmenter(AugmentConfig(noise_prob=0.0, reverb_prob=0.0, specaug=False), [noise], [rir])
    assert np.array_equal(off(wav, np.random.default_rng(0)), wav)
    feats = torch.randn(50, 80)
    assert off.spec_augment(feats, np.random.default_rng(0)) is feats


def _lengths(bank) -> list[int]:
    return sorted(bank.length(i) for i in range(len(bank)))


def test_open_bank_from_folder_and_shards(tmp_path):
    write_audio(tmp_path / "n" / "a.wav", np.full(800, 0.2, np.float32), 8000)
    write_audio(tmp_path / "n" / "b.wav", np.full(1600, 0.1, np.float32), 16000)
    (tmp_path / "n" / "bad.wav").write_bytes(b"junk")
    bank = open_bank(tmp_path / "n", 16000)
    assert isinstance(bank, MemoryBank) and _lengths(bank) == [1600, 1600]
    manifest = pack_shards(
        scan_files(tmp_path / "n"), tmp_path / "packed", kind="noise", progress=False
    )
    for src in (manifest, tmp_path / "packed"):
        lazy = open_bank(src, 8000)
        assert isinstance(lazy, ShardBank) and _lengths(lazy) == [800, 800]
        means = sorted(float(np.median(lazy.load(i))) for i in range(2))  # resampled on read
        np.testing.assert_allclose(means, [0.1, 0.2], atol=2e-3)
        assert _lengths(open_bank(src, 8000, in_memory=True)) == [800, 800]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        open_bank(tmp_path / "empty", 16000)


@pytest.mark.realdata
@needs_real
def test_real_noise_and_rir_banks():
    noises = open_bank(REAL / "noise", 16000)
    rirs = open_bank(REAL / "rir", 16000)
    assert len(noises) == 9 and len(rirs) == 7
    rng = np.random.default_rng(0)
    wav = _speech_like(32000)
    for i in range(len(rirs)):
        assert reverberate(wav, rirs.load(i)).shape == wav.shape
    out = add_noise(wav, noises.load(0), 10.0, rng)
    measured = 10 * np.log10(
        np.mean(wav.astype(np.float64) ** 2) / np.mean((out - wav).astype(np.float64) ** 2)
    )
    assert abs(measured - 10.0) < 0.5

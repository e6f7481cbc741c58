"""Separation losses (models/losses/separation.py) and the shared multi-resolution STFT loss
(models/losses/spectral.py) on signals with known answers."""

from __future__ import annotations

import math
import sys

import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models.losses.separation import (  # noqa: E402
    energy_loss,
    phase_sensitive_spectral_loss,
    si_sdr_loss,
    single_src_si_sdr_loss,
)
from models.losses.spectral import multi_resolution_stft_loss  # noqa: E402
from models.metrics import si_sdr  # noqa: E402

torch.set_num_threads(2)


def signals(b: int = 3, t: int = 9600, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, generator=g) * 0.1, torch.randn(b, t, generator=g) * 0.1


def add_noise_at(target: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    # make the noise orthogonal to the target so SI-SDR equals the SNR exactly
    t0 = target - target.mean(-1, keepdim=True)
    n0 = noise - noise.mean(-1, keepdim=True)
    n0 = n0 - (n0 * t0).sum(-1, keepdim=True) / t0.pow(2).sum(-1, keepdim=True) * t0
    gain = (t0.pow(2).sum(-1) / n0.pow(2).sum(-1) / 10 ** (snr_db / 10)).sqrt()
    return target + gain[:, None] * n0


def test_si_sdr_loss_known_values():
    target, noise = signals()
    assert si_sdr_loss is single_src_si_sdr_loss
    scaled = si_sdr_loss(0.3 * target, target)
    assert scaled.shape == (3,) and (scaled < -70).all(), "a scaled copy is (almost) perfect"
    for snr in (-5.0, 0.0, 10.0):
        loss = si_sdr_loss(add_noise_at(target, noise, snr), target)
        torch.testing.assert_close(loss, torch.full((3,), -snr), atol=1e-3, rtol=0)
    # agrees with the numpy metric and is invariant to an offset (zero-mean)
    est = target + noise
    ref_val = [si_sdr(est[i].numpy(), target[i].numpy()) for i in range(3)]
    torch.testing.assert_close(
        -si_sdr_loss(est + 0.5, target), torch.tensor(ref_val), atol=1e-3, rtol=0
    )


def test_si_sdr_loss_is_finite_for_silence():
    target, _ = signals()
    est = torch.zeros_like(target, requires_grad=True)
    loss = si_sdr_loss(est, torch.zeros_like(target)).sum() + si_sdr_loss(est, target).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(est.grad).all()
    with pytest.raises(ValueError, match="same shape"):
        si_sdr_loss(target, target[:, :-1])


def test_spectral_losses_zero_for_identical_and_grow_with_noise():
    target, noise = signals(t=12000)
    for fn in (multi_resolution_stft_loss, phase_sensitive_spectral_loss):
        same = fn(target, target)
        assert same.shape == (3,) and same.abs().max() < 1e-5, fn.__name__
        mild = fn(add_noise_at(target, noise, 20.0), target)
        strong = fn(add_noise_at(target, noise, 0.0), target)
        assert (mild > 1e-3).all() and (strong > 2 * mild).all(), fn.__name__


def test_complex_compressed_loss_sees_phase():
    target, _ = signals(t=12000)
    # a sign flip keeps every magnitude: only the complex (phase-aware) term can see it
    flipped = phase_sensitive_spectral_loss(-target, target)
    mag_only = phase_sensitive_spectral_loss(-target, target, complex_weight=0.0)
    assert (flipped > 1e-3).all() and mag_only.abs().max() < 1e-6


def test_mr_stft_resolutions_are_configurable():
    target, noise = signals(t=12000)
    one = multi_resolution_stft_loss(target + noise, target, resolutions=[(256, 64)])
    assert one.shape == (3,) and torch.isfinite(one).all()
    with pytest.raises(ValueError):
        multi_resolution_stft_loss(target, target, resolutions=[])


def test_energy_loss():
    x = torch.full((2, 4800), 0.1)
    x[1] = 0.0
    e = energy_loss(x)
    torch.testing.assert_close(e[0], torch.tensor(10 * math.log10(0.01 + 1e-8)))
    torch.testing.assert_close(e[1], torch.tensor(-80.0))
    y = x.clone().requires_grad_(True)
    energy_loss(y).sum().backward()
    assert (y.grad[0] > 0).all(), "descending the loss shrinks the output"

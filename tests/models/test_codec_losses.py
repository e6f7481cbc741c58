"""Codec losses: spectral reconstruction and the generic GAN terms (models/losses/codec.py), and
the shared multi-resolution STFT loss (models/losses/spectral.py) as the codec task uses it."""

from __future__ import annotations

import sys

import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models.codec.discriminators import (  # noqa: E402
    DiscriminatorOutput,
    MultiScaleDiscriminator,
    STFTDiscriminator,
)
from models.losses.codec import (  # noqa: E402
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_bands,
    multi_resolution_mel_loss,
)
from models.losses.spectral import multi_resolution_stft_loss  # noqa: E402

torch.set_num_threads(2)


def _tone(freq: float, sr: int = 16000, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return (0.5 * torch.sin(2 * torch.pi * freq * t))[None]  # (1, T)


@pytest.mark.parametrize("loss_fn", ["mel", "stft"])
def test_spectral_losses_zero_on_identity_and_grow_with_distortion(loss_fn):
    torch.manual_seed(0)
    target = _tone(440.0) + 0.01 * torch.randn(1, 8000)

    def loss(pred):
        if loss_fn == "mel":
            return multi_resolution_mel_loss(pred, target, 16000)
        return multi_resolution_stft_loss(pred, target).mean()  # (B,) -> the task's scalar

    assert float(loss(target.clone())) == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn_like(target)
    small, large = float(loss(target + 0.01 * noise)), float(loss(target + 0.2 * noise))
    assert 0 < small < large
    # (B, 1, T) and (B, T) are the same input
    assert float(loss(target[:, None] + 0.2 * noise[:, None])) == pytest.approx(large, rel=1e-5)
    pred = (target + 0.1 * noise).requires_grad_()
    loss(pred).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_mel_loss_is_sample_rate_aware_and_checks_shapes():
    a, b = _tone(1000.0), _tone(1100.0)
    # the same samples are different frequencies at another rate -> another mel warping
    l16 = float(multi_resolution_mel_loss(a, b, 16000))
    l24 = float(multi_resolution_mel_loss(a, b, 24000))
    assert l16 > 0 and l24 > 0 and abs(l16 - l24) > 1e-3
    assert [mel_bands(w) for w in (64, 1024, 2048)] == [10, 160, 320]
    # silence vs silence: finite, zero (the log floor keeps it finite)
    z = torch.zeros(2, 4000, requires_grad=True)
    out = multi_resolution_mel_loss(z, torch.zeros(2, 4000), 16000)
    out.backward()
    assert float(out.detach()) == 0.0 and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="differ"):
        multi_resolution_mel_loss(a, a[:, :-1], 16000)
    with pytest.raises(ValueError, match="mono"):
        multi_resolution_stft_loss(torch.zeros(1, 2, 100), torch.zeros(1, 2, 100))


def _out(logits, feats=None) -> DiscriminatorOutput:
    return DiscriminatorOutput(logits=logits, features=feats or [[] for _ in logits])


def test_discriminator_and_generator_losses_known_values():
    full = lambda v: torch.full((2, 1, 5), float(v))  # noqa: E731
    # hinge: perfect separation with margin -> 0; undecided -> 1 + 1
    assert float(discriminator_loss([full(2)], [full(-2)], "hinge")) == 0.0
    assert float(discriminator_loss([full(0)], [full(0)], "hinge")) == 2.0
    assert float(discriminator_loss([full(1)], [full(-1)], "lsgan")) == 1.0  # (1-1)^2 + 1
    assert float(discriminator_loss([full(1)], [full(0)], "lsgan")) == 0.0
    assert float(generator_adversarial_loss([full(2)], "hinge")) == 0.0
    assert float(generator_adversarial_loss([full(0)], "hinge")) == 1.0
    assert float(generator_adversarial_loss([full(1)], "lsgan")) == 0.0
    assert float(generator_adversarial_loss([full(-1)], "lsgan")) == 4.0
    # mean over sub-discriminators, whatever container they come in
    real = [full(0), full(2)]
    fake = [full(0), full(-2)]
    expected = (2.0 + 0.0) / 2
    assert float(discriminator_loss(real, fake)) == expected
    assert float(discriminator_loss(_out(real), _out(fake))) == expected
    both = [_out(real[:1]), _out(real[1:])], [_out(fake[:1]), _out(fake[1:])]
    assert float(discriminator_loss(*both)) == expected
    with pytest.raises(ValueError, match="hinge"):
        generator_adversarial_loss([full(0)], "wasserstein")
    with pytest.raises(ValueError, match="sub-discriminator"):
        discriminator_loss(real, fake[:1])
    with pytest.raises(TypeError):
        generator_adversarial_loss([])


def test_feature_matching_mean_over_layers_relative_and_gradient_only_to_fake():
    real = [[torch.zeros(1, 4, 10), torch.full((1, 2, 3), 2.0)]]
    fake = [[torch.ones(1, 4, 10, requires_grad=True), torch.full((1, 2, 3), 5.0)]]
    # layer errors 1 and 3, mean over layers (not over elements) -> 2
    assert float(feature_matching_loss(real, fake).detach()) == pytest.approx(2.0)
    # relative: the first layer's real features are all 0 -> eps floor; check a clean case
    real2 = [[torch.full((3,), 2.0)], [torch.full((3,), 4.0)]]
    fake2 = [[torch.full((3,), 3.0)], [torch.full((3,), 4.0)]]
    assert float(feature_matching_loss(real2, fake2, relative=True)) == pytest.approx(0.25)
    assert float(feature_matching_loss(_out([torch.zeros(1)], real2[:1]), fake2[:1])) == 1.0
    r = torch.randn(2, 3, requires_grad=True)
    f = torch.randn(2, 3, requires_grad=True)
    feature_matching_loss([[r]], [[f]]).backward()
    assert r.grad is None and f.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="layers"):
        feature_matching_loss(real, [fake[0][:1]])


def test_losses_on_real_discriminators():
    torch.manual_seed(0)
    real = 0.1 * torch.randn(2, 1, 4096)
    fake = (0.1 * torch.randn(2, 1, 4096)).requires_grad_()
    discs = [MultiScaleDiscriminator(channels=4, max_channels=16), STFTDiscriminator(channels=4)]
    d_real = [d(real) for d in discs]
    d_fake = [d(fake) for d in discs]
    for kind in ("hinge", "lsgan"):
        assert torch.isfinite(discriminator_loss(d_real, d_fake, kind))
    g = generator_adversarial_loss(d_fake) + feature_matching_loss(d_real, d_fake)
    g.backward()
    assert torch.isfinite(fake.grad).all() and fake.grad.abs().sum() > 0
    # identical inputs -> zero feature-matching distance
    assert float(feature_matching_loss(d_real, [d(real) for d in discs])) == 0.0

"""Margin heads, the margin warm-up and the speaker cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.config import ConfigError, from_dict
from models.losses.speaker import margin_cross_entropy, top1_accuracy
from models.speaker.heads import (
    AAMSoftmax,
    AMSoftmax,
    HeadConfig,
    MarginScheduler,
    SoftmaxHead,
    build_head,
)

torch.set_num_threads(2)


def _data(b=6, d=16, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randint(0, c, (b,), generator=g)


def test_aam_margin_zero_is_scaled_cosine():
    emb, labels = _data()
    head = AAMSoftmax(16, 5, margin=0.0, scale=32.0)
    expected = 32.0 * F.normalize(emb) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(emb, labels), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(head.cosine(emb) * 32.0, expected, rtol=0, atol=1e-5)


def test_aam_margin_applies_to_target_only():
    emb, labels = _data()
    head = AAMSoftmax(16, 5, margin=0.3, scale=10.0)
    cos = head.cosine(emb).detach()
    logits = head(emb, labels).detach()
    target = F.one_hot(labels, 5).bool()
    # non-target logits are the scaled cosine
    torch.testing.assert_close(logits[~target], 10.0 * cos[~target])
    # target logits: 10 * cos(theta + m) (random 16-d vectors are far from theta + m > pi)
    theta = torch.acos(cos[target])
    assert torch.all(theta + 0.3 < math.pi)
    torch.testing.assert_close(logits[target], 10.0 * torch.cos(theta + 0.3), rtol=0, atol=1e-4)
    assert torch.all(logits[target] < 10.0 * cos[target])


def test_aam_fallback_when_theta_plus_m_exceeds_pi():
    head = AAMSoftmax(4, 3, margin=0.5, scale=1.0)
    labels = torch.tensor([1])
    emb = -head.weight[1:2].detach()  # theta = pi: cos(theta + m) would *increase* again
    logit = head(emb, labels)[0, 1].item()
    assert logit == pytest.approx(-1.0 - math.sin(math.pi - 0.5) * 0.5, abs=1e-5)
    easy = AAMSoftmax(4, 3, margin=0.5, scale=1.0, easy_margin=True)
    easy.load_state_dict(head.state_dict())
    assert easy(emb, labels)[0, 1].item() == pytest.approx(-1.0, abs=1e-5)  # keeps cos when <= 0


def test_am_softmax_subtracts_cosine_margin():
    emb, labels = _data()
    head = AMSoftmax(16, 5, margin=0.25, scale=30.0)
    expected = 30.0 * (head.cosine(emb) - 0.25 * F.one_hot(labels, 5))
    torch.testing.assert_close(head(emb, labels), expected)


def test_set_margin_and_validation():
    emb, labels = _data()
    head = AAMSoftmax(16, 5, margin=0.2)
    before = head(emb, labels).detach()
    head.set_margin(0.0)
    assert head.margin == 0.0
    torch.testing.assert_close(head(emb, labels), 32.0 * head.cosine(emb), atol=1e-5, rtol=0)
    assert not torch.allclose(before, head(emb, labels))
    with pytest.raises(ValueError, match="margin"):
        head.set_margin(2.0)
    with pytest.raises(ValueError, match="margin"):
        AMSoftmax(16, 5).set_margin(-0.1)
    assert "margin" not in "".join(head.state_dict())  # margin is recomputed, not saved


@pytest.mark.parametrize("kind", ["aam", "am", "softmax"])
def test_gradients_flow(kind):
    emb, labels = _data()
    emb.requires_grad_(True)
    head = build_head(HeadConfig(type=kind), 16, 5)
    loss = margin_cross_entropy(head(emb, labels), labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    for p in head.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_aam_gradient_finite_when_embedding_equals_class_weight():
    head = AAMSoftmax(8, 3, margin=0.2)
    emb = head.weight[2:3].detach().clone().requires_grad_(True)  # cos = 1 exactly
    margin_cross_entropy(head(emb, torch.tensor([2])), torch.tensor([2])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_margin_scheduler_linear_and_exp():
    s = MarginScheduler(0.2, warmup_start=100, warmup_end=300)
    assert s.value(0) == 0.0 and s.value(99) == 0.0
    assert s.value(100) == 0.0
    assert s.value(200) == pytest.approx(0.1)
    assert s.value(300) == pytest.approx(0.2) and s.value(10_000) == pytest.approx(0.2)
    values = [s.value(k) for k in range(0, 400, 10)]
    assert values == sorted(values)  # monotone

    e = MarginScheduler(0.2, warmup_start=0, warmup_end=100, initial=0.05, mode="exp")
    assert e.value(0) == pytest.approx(0.05)
    assert e.value(50) == pytest.approx(0.05 + 0.15 * (1 - 1e-3**0.5))
    assert e.value(50) > 0.05 + 0.15 * 0.5  # exponential warm-up front-loads the increase
    assert e.value(100) == pytest.approx(0.2)

    none = MarginScheduler(0.3)
    assert none.value(0) == 0.3  # no warm-up: the final margin from the first step
    with pytest.raises(ValueError):
        MarginScheduler(0.2, warmup_start=-1)
    with pytest.raises(ValueError):
        MarginScheduler(0.2, mode="cosine")


def test_head_config_builds_heads_and_scheduler():
    cfg = from_dict(
        HeadConfig,
        {"type": "am", "margin": 0.3, "scale": 20.0, "margin_warmup_steps": 10},
    )
    head = build_head(cfg, 8, 4)
    assert isinstance(head, AMSoftmax) and head.margin == 0.3 and head.scale == 20.0
    assert cfg.scheduler().value(5) == pytest.approx(0.15)
    assert isinstance(build_head(HeadConfig(), 8, 4), AAMSoftmax)
    assert isinstance(build_head(HeadConfig(type="softmax"), 8, 4), SoftmaxHead)
    with pytest.raises(ConfigError):
        from_dict(HeadConfig, {"type": "arcface"})
    # every head exposes margin-free scores for accuracy logging
    emb, labels = _data(d=8, c=4)
    for kind in ("aam", "am", "softmax"):
        assert build_head(HeadConfig(type=kind), 8, 4).cosine(emb).shape == (6, 4)


def test_margin_cross_entropy_and_accuracy():
    logits = torch.randn(5, 7)
    labels = torch.tensor([0, 6, 3, 3, 1])
    torch.testing.assert_close(
        margin_cross_entropy(logits, labels), F.cross_entropy(logits, labels)
    )
    torch.testing.assert_close(
        margin_cross_entropy(logits, labels, label_smoothing=0.1),
        F.cross_entropy(logits, labels, label_smoothing=0.1),
    )
    half = margin_cross_entropy(logits.half(), labels)
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="labels"):
        margin_cross_entropy(logits, labels[:3])
    scores = F.one_hot(labels, 7).float()
    assert top1_accuracy(scores, labels).item() == 1.0
    assert top1_accuracy(scores, (labels + 1) % 7).item() == 0.0

"""ACDNet / Micro-ACDNet: sizes against the paper (arXiv 2103.03483) and the classifier contract."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models import build_model, get_preset, list_models, list_presets  # noqa: E402
from models.classify.acdnet import ACDNet, ACDNetConfig, _pool_sizes  # noqa: E402

torch.set_num_threads(2)

# Paper, Table 1 / Sec. 5: ACDNet 4.74M parameters and 544M FLOPs; Micro-ACDNet 0.131M and
# 14.82M. The paper's "FLOPs" are multiply-accumulates: FlopCounterMode counts 2 per MAC
# (ACDNet: 1,083.7M counted = 541.9M MACs; Micro-ACDNet: 28.57M counted = 14.29M MACs).
PAPER = {"acdnet": (4.74e6, 544e6), "micro-acdnet": (0.131e6, 14.82e6)}


def test_registry():
    assert "acdnet" in list_models("classify")
    assert {"acdnet", "micro-acdnet", "acdnet-tiny"} <= set(list_presets("acdnet"))
    assert get_preset("acdnet").config.num_classes == 50


def test_pool_sizes_follow_reference_rule():
    assert _pool_sizes(64) == [2, 2, 2, 2, 2, 2]
    assert _pool_sizes(151) == [2, 2, 2, 2, 2, 4]
    assert _pool_sizes(20) == [2, 2, 2, 2, 1, 1]


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_parameters_and_flops_match_paper(preset):
    params, macs = PAPER[preset]
    model = build_model(preset).eval()
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - params) <= 0.03 * params, n
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, model.cfg.input_length))
    counted_macs = counter.get_total_flops() / 2
    assert abs(counted_macs - macs) <= 0.10 * macs, counted_macs


def test_tiny_forward_shapes_and_training():
    torch.manual_seed(0)
    model = build_model("acdnet-tiny")
    assert isinstance(model, ACDNet)
    wav = 0.1 * torch.randn(2, model.cfg.input_length)
    logits = model(wav)
    assert logits.shape == (2, model.cfg.num_classes)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(wav[:, None]), model(wav))  # (B, 1, T) accepted


def test_bad_inputs_raise():
    model = build_model("acdnet-tiny").eval()
    with pytest.raises(ValueError, match="30225"):
        model(torch.zeros(1, 16000))
    with pytest.raises(ValueError, match="11 filter counts"):
        ACDNetConfig(channels=(8, 64))

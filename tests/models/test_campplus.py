"""CAM++ (models/speaker/campplus.py): shapes, 3D-Speaker checkpoint layout, variable length."""

from __future__ import annotations

import pytest
import torch

from models.config import ConfigError
from models.registry import build_model
from models.speaker.campplus import CAMLayer, CAMPPlus, CAMPPlusConfig
from tests.conftest import assert_reference_layout, reference_state_dicts

torch.set_num_threads(2)

ENTRIES = ["campplus_192", "campplus_512"]


@pytest.fixture(scope="module")
def tiny() -> CAMPPlus:
    torch.manual_seed(0)
    return build_model("campplus-tiny").eval()


def test_tiny_shapes(tiny: CAMPPlus) -> None:
    out = tiny(torch.randn(2, 200, 80))
    assert out.shape == (2, tiny.cfg.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("frames", [150, 301])
def test_variable_length(tiny: CAMPPlus, frames: int) -> None:
    with torch.no_grad():
        out = tiny(torch.randn(3, frames, 80))
    assert out.shape == (3, tiny.cfg.embed_dim)
    assert torch.isfinite(out).all()


def test_eval_deterministic(tiny: CAMPPlus) -> None:
    x = torch.randn(2, 180, 80)
    with torch.no_grad():
        assert torch.equal(tiny(x), tiny(x))


def test_train_mode_backward() -> None:
    model = build_model("campplus-tiny").train()
    out = model(torch.randn(2, 120, 80))
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_not_normalised(tiny: CAMPPlus) -> None:
    # 3D-Speaker returns the raw embedding; normalisation is the pipeline's job.
    with torch.no_grad():
        norms = tiny(torch.randn(4, 160, 80)).norm(dim=-1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)


@pytest.mark.parametrize("entry", ENTRIES)
def test_3dspeaker_state_dict_layout(entry: str) -> None:
    spec = reference_state_dicts()[entry]
    model = build_model(f"3dspeaker/{entry}")
    cfg = model.cfg
    assert cfg.feat_dim == spec["constructor_args"]["feat_dim"]
    assert cfg.embed_dim == spec["constructor_args"]["embedding_size"]
    assert_reference_layout(model, spec)


@pytest.mark.parametrize("frames", [100, 250, 37])
def test_cam_segment_mean(frames: int) -> None:
    cam = CAMLayer(
        bn_channels=4, out_channels=2, kernel_size=3, dilation=1, reduction=2, seg_len=100
    )
    x = torch.randn(2, 4, frames)
    expected = torch.cat(
        [chunk.mean(-1, keepdim=True).expand_as(chunk) for chunk in x.split(100, dim=-1)], dim=-1
    )
    torch.testing.assert_close(cam.segment_mean(x), expected)


def test_stats_pool_matches_definition(tiny: CAMPPlus) -> None:
    x = torch.randn(2, 6, 50)
    expected = torch.cat([x.mean(-1), x.std(-1, unbiased=True)], dim=-1)
    torch.testing.assert_close(tiny.xvector.stats(x), expected)


def test_dense_block_matches_concatenation(tiny: CAMPPlus) -> None:
    block = tiny.xvector.block1
    x = torch.randn(2, block.in_channels, 40)
    expected = x
    for layer in block.values():
        expected = torch.cat([expected, layer(expected)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_bad_config_raises() -> None:
    with pytest.raises(ConfigError, match="same length"):
        build_model("campplus-tiny", {"block_kernels": [3, 3]})
    with pytest.raises(ConfigError, match="odd"):
        build_model("campplus-tiny", {"block_kernels": [3, 4, 3]})
    with pytest.raises(ValueError, match="feat_dim"):
        CAMPPlusConfig(feat_dim=0)

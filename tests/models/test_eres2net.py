"""ERes2Net / ERes2NetV2 (models/speaker/eres2net.py): shapes, 3D-Speaker checkpoint layout,
variable length, building blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import ConfigError
from models.registry import build_model
from models.speaker.eres2net import AFF, ERes2NetBlock, ERes2NetConfig
from tests.conftest import assert_reference_layout, reference_state_dicts

torch.set_num_threads(2)

TINY = ["eres2net-tiny", "eres2netv2-tiny"]
ENTRIES = ["eres2net_192", "eres2net_base_512", "eres2netv2_192"]
ARG_NAMES = {  # 3D-Speaker constructor argument -> our config field
    "feat_dim": "feat_dim",
    "embedding_size": "embed_dim",
    "m_channels": "m_channels",
    "baseWidth": "base_width",
    "scale": "scale",
    "expansion": "expansion",
}


@pytest.fixture(scope="module", params=TINY)
def tiny(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    return build_model(request.param).eval()


def test_tiny_shapes(tiny: nn.Module) -> None:
    out = tiny(torch.randn(2, 200, 80))
    assert out.shape == (2, tiny.cfg.embed_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("frames", [150, 301])
def test_variable_length(tiny: nn.Module, frames: int) -> None:
    with torch.no_grad():
        out = tiny(torch.randn(3, frames, 80))
    assert out.shape == (3, tiny.cfg.embed_dim)
    assert torch.isfinite(out).all()


def test_eval_deterministic(tiny: nn.Module) -> None:
    x = torch.randn(2, 180, 80)
    with torch.no_grad():
        assert torch.equal(tiny(x), tiny(x))


def test_other_feat_dim() -> None:
    # 81 bins is not a multiple of 8: the pooled size must follow the real conv arithmetic.
    model = build_model("eres2net-tiny", {"feat_dim": 81}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 100, 81)).shape == (1, model.cfg.embed_dim)


@pytest.mark.parametrize("entry", ENTRIES)
def test_3dspeaker_state_dict_layout(entry: str) -> None:
    spec = reference_state_dicts()[entry]
    model = build_model(f"3dspeaker/{entry}")
    for arg, value in spec["constructor_args"].items():
        assert getattr(model.cfg, ARG_NAMES[arg]) == value, arg
    assert_reference_layout(model, spec)


def test_large_preset_width() -> None:
    cfg = build_model("eres2net-large").cfg
    assert cfg.m_channels == 64 and cfg.embed_dim == 192


def test_aff_blends_inputs() -> None:
    aff = AFF(channels=8).eval()
    x, y = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        a = 1 + torch.tanh(aff.local_att(torch.cat([x, y], dim=1)))
        torch.testing.assert_close(aff(x, y), x * a + y * (2 - a))
        # With equal inputs the attention cancels: x * a + x * (2 - a) == 2x.
        torch.testing.assert_close(aff(x, x), 2 * x)


@pytest.mark.parametrize("fuse", [False, True])
def test_block_shapes_and_clip(fuse: bool) -> None:
    block = ERes2NetBlock(
        in_planes=8, planes=16, stride=2, base_width=32, scale=2, expansion=2, fuse=fuse
    ).eval()
    assert len(block.fuse_models) == (1 if fuse else 0)
    with torch.no_grad():
        out = block(100 * torch.randn(2, 8, 11, 9))
    assert out.shape == (2, 32, 6, 5)
    assert out.min() >= 0 and out.max() <= 20  # ReLU clipped at 20, as in the reference


def test_bad_config_raises() -> None:
    with pytest.raises(ConfigError, match="AFF needs"):
        build_model("eres2net-tiny", {"m_channels": 1})
    with pytest.raises(ConfigError, match="num_blocks"):
        build_model("eres2netv2-tiny", {"num_blocks": [1, 1, 1]})
    with pytest.raises(ValueError, match="scale"):
        ERes2NetConfig(scale=0)

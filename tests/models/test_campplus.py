"""CAM++ (models/speaker/campplus.py): shapes, 3D-Speaker checkpoint layout, variable length."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from models.config import ConfigError
from models.registry import build_model
from models.speaker.campplus import CAMLayer, CAMPPlus, CAMPPlusConfig

torch.set_num_threads(2)

ENTRIES = ["campplus_192", "campplus_512"]


def _reference_json() -> dict:
    shared = os.environ.get("VOXRAY_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    path = base / "reference" / "3dspeaker_state_dicts.json"
    if not path.is_file():
        pytest.skip(f"3D-Speaker state-dict listing not found at {path} (set VOXRAY_SHARED)")
    return json.loads(path.read_text())


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
    spec = _reference_json()[entry]
    model = build_model(f"3dspeaker/{entry}")
    cfg = model.cfg
    assert cfg.feat_dim == spec["constructor_args"]["feat_dim"]
    assert cfg.embed_dim == spec["constructor_args"]["embedding_size"]
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = spec["state_dict"]
    assert sorted(set(ref) - set(ours)) == [], "keys missing from ours"
    assert sorted(set(ours) - set(ref)) == [], "keys the reference does not have"
    assert {k: s for k, s in ours.items() if s != ref[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    # The layout claim in one line: a reference-shaped state dict loads strictly.
    state = model.state_dict()
    fake = {k: torch.zeros(s, dtype=state[k].dtype) for k, s in ref.items()}
    model.load_state_dict(fake, strict=True)


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

"""ECAPA-TDNN, ResNet / Thin-ResNet + VLAD and x-vector: shapes, presets, 3D-Speaker layout.

The generic contract (gradients, save/load, batch consistency) over every ``-tiny`` preset lives
in ``test_contract.py``; this file covers what is specific to these three architectures.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import ConfigError, to_dict
from models.layers.pooling import GhostVLAD, NetVLAD
from models.registry import build_model, get_preset, resolve
from models.speaker.ecapa_tdnn import SameConv1d
from models.speaker.xvector import MIN_FRAMES
from tests.conftest import assert_reference_layout, reference_state_dicts

torch.set_num_threads(2)

TINY = {"ecapa_tdnn-tiny": 32, "resnet-tiny": 32, "xvector-tiny": 32}
THIN_SMALL = {  # a Thin-ResNet small enough to run here; the real presets only get built
    "thin": True,
    "num_blocks": [1, 1, 1, 1],
    "stage_channels": [4, 8, 8, 16],
    "stem_channels": 8,
    "frame_dim": 16,
    "embed_dim": 24,
    "two_emb_layer": False,
}


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.running_mean.normal_(0.0, 0.3)
                mod.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_presets_shapes(name):
    torch.manual_seed(0)
    model = build_model(name)
    emb = model(torch.randn(2, 200, 80))
    assert emb.shape == (2, TINY[name])
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_variable_length_input(name):
    torch.manual_seed(0)
    model = _randomize_batchnorm(build_model(name)).eval()
    with torch.no_grad():
        for frames in (MIN_FRAMES, 57, 301):
            emb = model(torch.randn(1, frames, 80))
            assert emb.shape == (1, TINY[name]) and torch.isfinite(emb).all(), frames


@pytest.mark.parametrize("name", sorted(TINY))
def test_eval_is_deterministic(name):
    torch.manual_seed(0)
    model = _randomize_batchnorm(build_model(name)).eval()
    feats = torch.randn(3, 120, 80)
    with torch.no_grad():
        first, second = model(feats), model(feats.clone())
    assert torch.equal(first, second)


@pytest.mark.parametrize("pooling", ["netvlad", "ghostvlad"])
def test_thin_resnet_vlad_shapes(pooling):
    torch.manual_seed(0)
    model = build_model("resnet", {**THIN_SMALL, "pooling": pooling, "num_clusters": 3})
    expected_cls = GhostVLAD if pooling == "ghostvlad" else NetVLAD
    assert type(model.pool) is expected_cls
    # Ghost clusters are dropped: the projection sees num_clusters * frame_dim features.
    assert model.pool.out_dim == 3 * 16 and model.seg_1.in_features == 3 * 16
    ghosts = 2 if pooling == "ghostvlad" else 0
    assert model.pool.assign.out_channels == 3 + ghosts
    emb = model(torch.randn(2, 100, 80))
    assert emb.shape == (2, 24)
    emb.sum().backward()
    assert model.pool.centroids.grad is not None


def test_thin_resnet_presets_follow_the_paper():
    for name, ghosts, cls in (
        ("thin-resnet34-ghostvlad", 2, GhostVLAD),
        ("thin-resnet34-netvlad", 0, NetVLAD),
    ):
        cfg = get_preset(name).config
        assert cfg.thin and cfg.num_blocks == (3, 4, 6, 3) and cfg.embed_dim == 512
        assert cfg.num_clusters == 8 and cfg.widths == (48, 96, 128, 256)
        model = build_model(name)
        assert type(model.pool) is cls
        assert model.pool.assign.out_channels == 8 + ghosts
        assert model.seg_1.in_features == 8 * cfg.frame_dim


def test_resnet_handles_feat_dims_not_divisible_by_8():
    model = build_model("resnet-tiny", {"feat_dim": 81})
    assert model(torch.randn(2, 40, 81)).shape == (2, 32)
    thin = build_model("resnet", {**THIN_SMALL, "feat_dim": 63, "pooling": "ghostvlad"})
    assert thin(torch.randn(2, 40, 63)).shape == (2, 24)


def test_same_conv_is_reflect_padded():
    torch.manual_seed(0)
    ours = SameConv1d(4, 5, kernel_size=3, dilation=2)
    torch_reflect = nn.Conv1d(4, 5, 3, dilation=2, padding=2, padding_mode="reflect")
    torch_reflect.load_state_dict(ours.conv.state_dict())
    x = torch.randn(2, 4, 20)
    assert torch.allclose(ours(x), torch_reflect(x), atol=1e-6)


def test_xvector_rejects_too_short_input():
    model = build_model("xvector-tiny")
    with pytest.raises(ValueError, match="at least 16 frames"):
        model(torch.randn(1, MIN_FRAMES - 1, 80))


def test_bad_configs_raise_config_errors():
    with pytest.raises(ConfigError, match="same length"):
        build_model("ecapa_tdnn-tiny", {"kernel_sizes": [5, 3, 1]})
    with pytest.raises(ConfigError, match="res2net_scale"):
        build_model("ecapa_tdnn-tiny", {"channels": [32, 30, 32, 96]})
    with pytest.raises(ConfigError, match="ghost_clusters"):
        build_model("resnet-tiny", {"pooling": "ghostvlad", "ghost_clusters": 0})
    with pytest.raises(ConfigError, match="not one of"):
        build_model("resnet-tiny", {"pooling": "vlad"})


@pytest.mark.parametrize(
    "name",
    [
        "ecapa_tdnn-tiny",
        "ecapa-tdnn-512",
        "resnet34",
        "thin-resnet34-ghostvlad",
        "xvector-tiny",
        "3dspeaker/ecapa_tdnn_c1024_192",
    ],
)
def test_preset_configs_round_trip_through_plain_dicts(name):
    entry, cfg = resolve(name)
    assert resolve(entry.name, to_dict(cfg))[1] == cfg


@pytest.mark.parametrize("entry", ["ecapa_tdnn_c1024_192", "resnet34_256"])
def test_3dspeaker_state_dict_layout(entry):
    ref = reference_state_dicts()[entry]
    model = build_model(f"3dspeaker/{entry}")
    assert list(model.state_dict()) == list(ref["state_dict"])  # same keys, same order
    assert_reference_layout(model, ref)

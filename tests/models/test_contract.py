"""The registry contract, over every ``-tiny`` preset (house style "Tests").

For each registered model: a ``<name>-tiny`` preset exists; output shapes; finite gradients reach
every parameter; save -> ``load_model`` gives identical outputs; eval is deterministic; a batch of
two equals two singles.
"""

from __future__ import annotations

import sys

import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models import build_model, list_models, list_presets, load_model, save_checkpoint  # noqa: E402
from models.registry import get_entry, get_preset  # noqa: E402

TINY = [p for p in list_presets() if p.endswith("-tiny")]


def make_input(family: str, cfg, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if family == "speaker":
        return torch.randn(batch, 200, cfg.feat_dim, generator=g)
    raise NotImplementedError(f"no contract input for family {family!r}")


def test_every_model_has_a_tiny_preset():
    assert list_models(), "no models registered"
    missing = [m for m in list_models() if f"{m}-tiny" not in list_presets(m)]
    assert not missing, f"models without a -tiny preset: {missing}"


def test_unknown_model_lists_known_names():
    with pytest.raises(KeyError, match="known models"):
        build_model("no-such-model")


@pytest.mark.parametrize("preset", TINY)
def test_tiny_contract(preset, tmp_path):
    torch.manual_seed(0)
    p = get_preset(preset)
    family = get_entry(p.model_name).family
    model = build_model(preset)
    x = make_input(family, p.config, 2)

    # gradients reach every parameter and are finite
    model.train()
    out = model(x)
    out.float().pow(2).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{preset}: no gradient for {name}"
        assert torch.isfinite(param.grad).all(), f"{preset}: non-finite gradient for {name}"

    model.eval()
    with torch.no_grad():
        y = model(x)
        if family == "speaker":
            assert y.shape == (2, p.config.embed_dim)
        assert torch.isfinite(y).all()
        # eval determinism
        assert torch.equal(y, model(x))
        # a batch of two equals two singles
        singles = torch.cat([model(x[:1]), model(x[1:])])
        torch.testing.assert_close(y, singles, rtol=1e-4, atol=1e-5)

    # save -> load_model gives identical outputs
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"test": True})
    loaded = load_model(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), y)

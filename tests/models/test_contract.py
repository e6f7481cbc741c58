"""The registry contract, over every ``-tiny`` preset (house style "Tests").

For each registered model: a ``<name>-tiny`` preset exists; output shapes; finite gradients reach
every parameter; save -> ``load_model`` gives identical outputs; eval is deterministic; a batch of
two equals two singles.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models import build_model, list_models, list_presets, load_model, save_checkpoint  # noqa: E402
from models.registry import get_entry, get_preset  # noqa: E402

TINY = [p for p in list_presets() if p.endswith("-tiny")]


def make_input(
    family: str, cfg, batch: int, seed: int = 0
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """One tensor, or a tuple of positional inputs (all batch-first) for ``model(*inputs)``."""
    g = torch.Generator().manual_seed(seed)
    if family == "speaker":
        return torch.randn(batch, 200, cfg.feat_dim, generator=g)
    if family == "codec":
        # 0.2 s of low-level noise, deliberately not a multiple of the hop (tests pad + crop)
        return 0.1 * torch.randn(batch, int(0.2 * cfg.sample_rate) + 7, generator=g)
    if family == "classify":
        return 0.1 * torch.randn(batch, cfg.input_length, generator=g)
    if family == "tse":
        # (mix, ref): 0.1 s mixture and 0.08 s reference, both off the hop grid
        mix = 0.1 * torch.randn(batch, int(0.1 * cfg.sample_rate) + 3, generator=g)
        ref = 0.1 * torch.randn(batch, int(0.08 * cfg.sample_rate) + 5, generator=g)
        return mix, ref
    raise NotImplementedError(f"no contract input for family {family!r}")


def tensor_fields(out) -> dict[str, torch.Tensor]:
    """A model output as named tensors: a tensor is ``{"out": t}``; a dataclass output gives
    its tensor fields (non-tensor fields such as ``num_quantizers`` are left out)."""
    if isinstance(out, torch.Tensor):
        return {"out": out}
    assert dataclasses.is_dataclass(out), f"outputs are tensors or dataclasses, got {type(out)}"
    fields = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return {k: v for k, v in fields.items() if isinstance(v, torch.Tensor)}


def grad_loss(out) -> torch.Tensor:
    """Sum of mean squares of every float output (for a codec: reconstruction + commit loss)."""
    terms = [t.float().pow(2).mean() for t in tensor_fields(out).values() if t.is_floating_point()]
    return torch.stack(terms).sum()


def per_example(out, batch: int) -> dict[str, torch.Tensor]:
    """The tensor fields with a leading batch axis (batch-mean losses are not per example)."""
    return {k: t for k, t in tensor_fields(out).items() if t.dim() and t.shape[0] == batch}


def assert_same(a, b) -> None:
    """Bit-identical outputs: every tensor field equal, and the same non-tensor fields."""
    assert type(a) is type(b)
    ta, tb = tensor_fields(a), tensor_fields(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"field {k!r} differs"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            if not isinstance(getattr(a, f.name), torch.Tensor):
                assert getattr(a, f.name) == getattr(b, f.name), f"field {f.name!r} differs"


def check_output(family: str, cfg, x: torch.Tensor, y) -> None:
    """Output shapes per family."""
    b = x.shape[0]
    if family == "speaker":
        assert y.shape == (b, cfg.embed_dim)
    elif family == "codec":
        frames = -(-x.shape[-1] // cfg.hop_length)
        assert y.audio.shape == (b, 1, x.shape[-1])
        assert y.codes.shape == (b, cfg.num_quantizers, frames)  # eval: all quantizers
        assert y.codes.dtype == torch.int64
        assert 0 <= int(y.codes.min()) and int(y.codes.max()) < cfg.codebook_size
        assert y.commit_loss.shape == () and y.num_quantizers == cfg.num_quantizers
    elif family == "classify":
        assert y.shape == (b, cfg.num_classes)
    elif family == "tse":
        frames = x.shape[-1] // cfg.hop_length + 1
        assert y.audio.shape == x.shape and y.audio.dtype == torch.float32
        assert y.mask.shape == (b, cfg.n_fft // 2 + 1, frames) and y.mask.is_complex()
        assert torch.isfinite(torch.view_as_real(y.mask)).all()
    else:
        raise NotImplementedError(f"no output check for family {family!r}")
    for name, t in tensor_fields(y).items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"non-finite {name}"


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
    inputs = make_input(family, p.config, 2)
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    x = inputs[0]  # the waveform/features whose batch and length the output follows

    # gradients reach every parameter and are finite
    model.train()
    out = model(*inputs)
    grad_loss(out).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{preset}: no gradient for {name}"
        assert torch.isfinite(param.grad).all(), f"{preset}: non-finite gradient for {name}"

    model.eval()
    with torch.no_grad():
        y = model(*inputs)
        check_output(family, p.config, x, y)
        # eval determinism
        assert_same(y, model(*inputs))
        # a batch of two equals two singles
        one = per_example(model(*(t[:1] for t in inputs)), 1)
        two = per_example(model(*(t[1:] for t in inputs)), 1)
        both = per_example(y, 2)
        assert both and both.keys() == one.keys()
        for k, t in both.items():
            torch.testing.assert_close(t, torch.cat([one[k], two[k]]), rtol=1e-4, atol=1e-5)

    # save -> load_model gives identical outputs
    path = save_checkpoint(model, tmp_path / "m.pt", meta={"test": True})
    loaded = load_model(path)
    assert not loaded.training
    with torch.no_grad():
        assert_same(loaded(*inputs), y)

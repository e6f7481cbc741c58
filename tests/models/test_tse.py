"""Target speaker extraction (models/tse/): band layout, lengths, conditioning, sizes, checkpointing.

The registry-wide contract (gradients, save/load, determinism, batch == singles) for ``tse-tiny``
is in ``tests/models/test_contract.py``.
"""

from __future__ import annotations

import sys

import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models import ConfigError, build_model, get_preset, list_models, list_presets  # noqa: E402
from models.tse import TargetSpeakerExtractor, TSEConfig, TSEOutput, band_edges  # noqa: E402

torch.set_num_threads(2)

SR = 48000


def tiny(**overrides) -> TargetSpeakerExtractor:
    torch.manual_seed(0)
    return build_model("tse-tiny", overrides or None)


def noise(*shape: int, seed: int) -> torch.Tensor:
    return 0.1 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_registry():
    assert "tse" in list_models("tse")
    assert {"tse-v1", "tse-v2", "tse-tiny"} <= set(list_presets("tse"))


def test_53_bands_cover_all_bins_with_overlap():
    cfg = TSEConfig()
    bands = band_edges(
        cfg.n_fft, cfg.sample_rate, cfg.region_edges_hz, cfg.bands_per_region, cfg.band_overlap
    )
    assert len(bands) == 53
    covered = torch.zeros(1025, dtype=torch.long)
    for s, e in bands:
        assert 0 <= s < e <= 1025
        covered[s:e] += 1
    assert (covered >= 1).all(), "every bin, DC to Nyquist, is in some band"
    assert bands[0][0] == 0 and bands[-1][1] == 1025
    for (s0, e0), (s1, e1) in zip(bands[:-1], bands[1:], strict=True):
        assert s0 < s1 and e0 < e1, "bands are ordered"
        assert s1 < e0, f"bands {(s0, e0)} and {(s1, e1)} do not overlap"
    # fine / medium / coarse: 11 bands below 1 kHz, 24 up to 8 kHz, 18 up to 24 kHz (bin 23.4 Hz)
    widths = [e - s for s, e in bands]
    assert max(widths[:11]) < min(widths[11:35]) and max(widths[11:35]) < min(widths[35:])
    assert bands[10][1] * SR / 2048 < 1200 and bands[35][0] * SR / 2048 > 7000


@pytest.mark.parametrize("length", [4800, 4801, 7777])
def test_output_length_equals_input_length(length):
    model = tiny().eval()
    mix, ref = noise(2, length, seed=1), noise(2, 3001, seed=2)
    with torch.no_grad():
        out = model(mix, ref)
    assert isinstance(out, TSEOutput)
    assert out.audio.shape == (2, length)
    assert out.mask.shape == (2, 1025, length // 480 + 1) and out.mask.is_complex()
    assert torch.isfinite(out.audio).all()


def test_mask_is_applied_by_complex_multiplication():
    model = tiny().eval()
    mix, ref = noise(1, 4801, seed=3), noise(1, 4000, seed=4)
    with torch.no_grad():
        out = model(mix, ref)
        # the model works on the unit-RMS mixture and scales back; the iSTFT is linear
        spec = model._stft(mix)
        expected = torch.istft(out.mask * spec, 2048, 480, 960, model.window, length=4801)
    torch.testing.assert_close(out.audio, expected, rtol=1e-4, atol=1e-6)


def test_swapping_the_reference_changes_the_output():
    model = tiny().eval()
    mix = noise(1, 4800, seed=5)
    ref_a, ref_b = noise(1, 4800, seed=6), torch.sin(torch.arange(4800) * 0.05)[None] * 0.3
    with torch.no_grad():
        a, b = model(mix, ref_a), model(mix, ref_b)
        a_again = model(mix, ref_a)
    assert torch.equal(a.audio, a_again.audio)
    assert (a.audio - b.audio).abs().max() > 1e-4 * a.audio.abs().max()
    assert not torch.allclose(a.mask, b.mask)


def test_conditioning_receives_gradients():
    model = tiny().train()
    out = model(noise(2, 4800, seed=7), noise(2, 3000, seed=8))
    out.audio.pow(2).mean().backward()
    assert set(model.conditioning) == {"0", "1"}
    for key, cond in model.conditioning.items():
        for name in ("attn.in_proj_weight", "attn.out_proj.weight", "film.weight", "film.bias"):
            grad = cond.get_parameter(name).grad
            assert grad is not None and grad.abs().sum() > 0, f"no gradient for {key}.{name}"


def test_no_film_and_partial_injection():
    model = tiny(film=False, inject_at=[1])
    assert set(model.conditioning) == {"1"} and model.conditioning["1"].film is None
    with torch.no_grad():
        assert model.eval()(noise(1, 2000, seed=9), noise(1, 2000, seed=10)).audio.shape == (
            1,
            2000,
        )


@pytest.mark.parametrize("bad", [{"inject_at": [2]}, {"inject_at": []}, {"win_length": 4096}])
def test_bad_config_raises(bad):
    with pytest.raises(ConfigError):
        build_model("tse-tiny", bad)


def test_gradient_checkpointing_matches():
    plain = tiny()
    ckpt = tiny(gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    mix, ref = noise(2, 4801, seed=11), noise(2, 3333, seed=12)
    outs = []
    for model in (plain, ckpt):
        model.train()
        out = model(mix, ref)
        out.audio.pow(2).mean().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0].audio, outs[1].audio)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7, msg=name)


# Counted: tse-v1 7,953,446 and tse-v2 12,099,110 parameters; the issue asks for "about 7.8M"
# (v1: N=128, LSTM 192, 6 blocks, inject at 0/2/4, no FiLM) and "about 11.5M" (v2: LSTM 256,
# inject at all 6 blocks, FiLM).
@pytest.mark.parametrize(("preset", "target"), [("tse-v1", 7.8e6), ("tse-v2", 11.5e6)])
def test_parameter_counts(preset, target):
    model = build_model(preset)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - target) <= 0.15 * target, f"{preset}: {n:,} parameters, expected ~{target:,.0f}"


def test_presets_match_the_issue():
    v1, v2 = get_preset("tse-v1").config, get_preset("tse-v2").config
    assert (v1.feature_dim, v1.lstm_hidden, v1.num_blocks, v1.inject_at, v1.film) == (
        128,
        192,
        6,
        (0, 2, 4),
        False,
    )
    assert (v2.lstm_hidden, v2.inject_at, v2.film) == (256, (0, 1, 2, 3, 4, 5), True)
    for cfg in (v1, v2, get_preset("tse-tiny").config):
        assert (cfg.sample_rate, cfg.n_fft, cfg.win_length, cfg.hop_length) == (SR, 2048, 960, 480)

"""The Kaldi fbank front end: matches torchaudio's kaldi.fbank + CMN, frame count, dither scale."""

from __future__ import annotations

import sys

import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

sys.modules.setdefault("ray", None)

from models.features import Fbank, FbankConfig, num_frames  # noqa: E402


def speechlike(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return 0.3 * torch.sin(2 * torch.pi * 180 * t) * (
        1 + torch.sin(2 * torch.pi * 3 * t)
    ) + 0.01 * torch.randn(n, generator=g)


def test_matches_kaldi_fbank_with_mean_norm():
    wav = speechlike(48000)
    ref = kaldi.fbank(
        wav[None],
        num_mel_bins=80,
        frame_length=25,
        frame_shift=10,
        dither=0.0,
        sample_frequency=16000,
    )
    ref = ref - ref.mean(0, keepdim=True)
    out = Fbank()(wav)
    assert out.shape == (1, num_frames(48000), 80) == (1, 298, 80)
    torch.testing.assert_close(out[0], ref)


def test_batch_rows_are_independent():
    a, b = speechlike(32000, 1), speechlike(32000, 2)
    both = Fbank()(torch.stack([a, b]))
    torch.testing.assert_close(both[1], Fbank()(b)[0])


def test_dither_is_in_int16_units():
    wav = speechlike(32000)
    clean = Fbank()(wav)
    torch.manual_seed(0)
    dithered = Fbank(FbankConfig(dither=1.0))(wav)
    # one int16 LSB of noise barely moves speech-level features (it would swamp them if it
    # were applied to the float waveform unscaled)
    assert (dithered - clean).abs().mean() < 0.05


def test_too_short_and_bad_shapes_raise():
    with pytest.raises(ValueError, match="shorter than one"):
        Fbank()(torch.zeros(100))
    with pytest.raises(ValueError, match=r"\(T,\) or \(B, T\)"):
        Fbank()(torch.zeros(1, 1, 16000))

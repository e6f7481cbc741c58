"""models.waveform: the one bad-audio exception, the waveform check and the resampler."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import sys

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest
import torch

from datasets.audio import AudioError as DatasetsAudioError
from models.waveform import AudioError, mono_float32, resample


def _tone(sr: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(
    "orig, target", [(8000, 16000), (44100, 16000), (48000, 16000), (16000, 8000)]
)
def test_resample_length_and_frequency(orig, target):
    wav = _tone(orig, 1.0, 440.0)
    out = resample(wav, orig, target)
    assert out.dtype == np.float32
    assert abs(out.shape[0] - target) <= 1
    spec = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spec) * target / out.shape[0]
    assert abs(peak_hz - 440.0) < 2.0


def test_resample_tensor_matches_array_and_keeps_kind():
    wav = _tone(8000, 0.3)
    out = resample(torch.from_numpy(wav), 8000, 16000)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), resample(wav, 8000, 16000))
    two = resample(np.stack([wav, -wav]), 8000, 16000)  # (C, T): along the last axis
    assert two.shape == (2, out.shape[0])
    same = resample(wav, 8000, 8000)
    assert same is not wav and np.array_equal(same, wav)
    with pytest.raises(ValueError, match="positive"):
        resample(wav, 0, 16000)


def test_mono_float32_accepts_and_converts():
    pcm = np.array([16384, -32768, 0], dtype=np.int16)
    np.testing.assert_allclose(mono_float32(pcm, 16000).numpy(), [0.5, -1.0, 0.0])
    assert mono_float32(np.ones((1, 5)), 16000).shape == (5,)
    stereo = np.stack([np.ones(4), np.zeros(4)]).astype(np.float32)
    np.testing.assert_allclose(mono_float32(stereo, 8000, mix_down=True).numpy(), 0.5)
    assert mono_float32(np.zeros(0, np.float32), 16000, allow_empty=True).numel() == 0


@pytest.mark.parametrize(
    ("wav", "sr", "kwargs", "match"),
    [
        (np.zeros((2, 4), np.float32), 16000, {}, "mono"),
        (np.zeros((2, 3, 4), np.float32), 16000, {"mix_down": True}, r"\(C, T\)"),
        (np.arange(4), 16000, {}, "not float"),
        (np.zeros(4, np.float32), 0, {}, "sample rate"),
        (np.zeros(0, np.float32), 16000, {}, "empty"),
        (np.array([0.0, np.inf], np.float32), 16000, {}, "NaN"),
    ],
)
def test_mono_float32_rejects_with_the_one_audio_error(wav, sr, kwargs, match):
    with pytest.raises(AudioError, match=match):
        mono_float32(wav, sr, **kwargs)


def test_one_exception_family():
    # decoding errors (datasets) and waveform errors (pipelines) are caught as one type
    assert DatasetsAudioError is AudioError and issubclass(AudioError, ValueError)

"""datasets.audio: decoding, errors a user can cause, shaping (resampling: test_waveform)."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import io
import os
import sys

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest
import soundfile as sf

from datasets.audio import (
    AudioError,
    audio_info,
    crop_or_pad,
    decode_audio,
    load_audio,
    write_audio,
)
from tests.conftest import REAL, needs_real


def _tone(sr: int = 16000, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_write_load_roundtrip(tmp_path):
    wav = _tone()
    path = write_audio(tmp_path / "a" / "x.wav", wav, 16000)
    out, sr = load_audio(path)
    assert sr == 16000 and out.dtype == np.float32 and out.shape == wav.shape
    np.testing.assert_allclose(out, wav, atol=1 / 32768 + 1e-6)
    assert audio_info(path) == (16000, 1, 1.0)


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_compressed_formats_decode(fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile here has no {fmt}")
    buf = io.BytesIO()
    sf.write(buf, _tone(), 16000, format=fmt)
    out, sr = decode_audio(buf.getvalue())
    assert sr == 16000 and out.dtype == np.float32
    assert abs(out.shape[0] - 16000) < 3000  # MP3 adds encoder delay/padding
    assert 0.2 < np.abs(out).max() <= 1.0


def test_stereo_downmix_and_keep_channels(tmp_path):
    left, right = _tone(freq=300), np.zeros(16000, np.float32)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, right], 1), 16000, subtype="PCM_16")
    mono, _ = load_audio(path)
    assert mono.shape == (16000,)
    np.testing.assert_allclose(mono, left / 2, atol=1e-4)
    both, _ = load_audio(path, mono=False)
    assert both.shape == (2, 16000)
    assert audio_info(path)[1] == 2


def test_load_with_target_sr(tmp_path):
    path = write_audio(tmp_path / "x.wav", _tone(8000, 0.5), 8000)
    out, sr = load_audio(path, 16000)
    assert sr == 16000 and abs(out.shape[0] - 8000) <= 1


def test_missing_file():
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio("/nonexistent/x.wav")


def test_empty_file(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "e.wav")
    with pytest.raises(AudioError, match="empty"):
        decode_audio(b"")


def test_corrupt_bytes(tmp_path):
    (tmp_path / "c.wav").write_bytes(os.urandom(2000))
    with pytest.raises(AudioError, match="cannot be decoded"):
        load_audio(tmp_path / "c.wav")
    with pytest.raises(AudioError, match="cannot be decoded"):
        decode_audio(b"definitely not audio" * 50)


def test_truncated_wav(tmp_path):
    buf = io.BytesIO()
    sf.write(buf, _tone(), 16000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    with pytest.raises(AudioError, match="truncated"):
        decode_audio(data[: len(data) // 2])
    (tmp_path / "t.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated"):
        load_audio(tmp_path / "t.wav")


def test_truncated_flac():
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).uniform(-0.3, 0.3, 16000), 16000, format="FLAC")
    data = buf.getvalue()
    with pytest.raises(AudioError, match="truncated|cannot be decoded"):
        decode_audio(data[: len(data) // 2])


def test_zero_length_audio(tmp_path):
    path = tmp_path / "z.wav"
    sf.write(path, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="zero length"):
        load_audio(path)


def test_too_short_and_too_long(tmp_path):
    path = write_audio(tmp_path / "s.wav", _tone(16000, 0.2), 16000)
    with pytest.raises(AudioError, match="shorter than the 0.5 s"):
        load_audio(path, min_seconds=0.5)
    load_audio(path, min_seconds=0.1)
    with pytest.raises(AudioError, match="longer than"):
        load_audio(path, max_seconds=0.1)


def test_audio_error_is_value_error():
    assert issubclass(AudioError, ValueError)


def test_crop_or_pad():
    wav = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(wav, 4, None), wav[3:7])  # centre crop
    rng = np.random.default_rng(0)
    starts = {int(crop_or_pad(wav, 4, rng)[0]) for _ in range(50)}
    assert starts <= set(range(7)) and len(starts) > 3
    padded = crop_or_pad(wav[:3], 8, rng)
    np.testing.assert_array_equal(padded, [0, 1, 2, 0, 1, 2, 0, 1])
    assert crop_or_pad(wav, 10, rng) is not wav
    with pytest.raises(AudioError):
        crop_or_pad(np.zeros(0, np.float32), 4, rng)


@pytest.mark.realdata
@needs_real
def test_real_fsdd_8k_to_16k():
    path = REAL / "speech" / "fsdd" / "0_george_0.wav"
    sr0, ch, dur = audio_info(path)
    assert (sr0, ch) == (8000, 1)
    wav, sr = load_audio(path, 16000)
    assert sr == 16000 and abs(wav.shape[0] - round(dur * 16000)) <= 1
    assert np.abs(wav).max() <= 1.0


@pytest.mark.realdata
@needs_real
def test_real_ogg_stereo_noise_and_flac():
    wav, sr = load_audio(REAL / "noise" / "hens.ogg", 16000)  # 44.1 kHz stereo Vorbis
    assert sr == 16000 and wav.ndim == 1 and abs(wav.shape[0] / 16000 - 10.04) < 0.05
    flac = REAL / "speech" / "librispeech-train-clean-100" / "103-1240-0000.flac"
    wav, sr = load_audio(flac)
    assert sr == 16000 and abs(wav.shape[0] / sr - 14.085) < 0.01
    wav2, _ = decode_audio(flac.read_bytes())
    np.testing.assert_array_equal(wav, wav2)

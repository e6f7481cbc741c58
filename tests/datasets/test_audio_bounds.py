"""Bounded decoding (header first) and the FFmpeg formats through PyAV (datasets/audio*.py)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from datasets.audio import (
    AUDIO_EXTENSIONS,
    AudioBudget,
    AudioError,
    AudioLimitError,
    decode_audio,
    load_audio,
)
from datasets.manifests import scan_tree
from models.waveform import resample
from tests.hostile_audio import (
    FFMPEG_FORMATS,
    decode_in_subprocess,
    encode_av,
    flac_bomb,
    wav_bomb,
)

LIBRI = "speech/librispeech-train-clean-100/103-1240-0000.flac"


def _lagged_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 2400) -> float:
    """Best correlation of ``a`` against ``b`` over codec delays of 0..max_lag samples."""
    n = min(len(b), len(a) - max_lag)
    return max(float(np.corrcoef(a[d : d + n], b[:n])[0, 1]) for d in range(0, max_lag, 8))


@pytest.mark.realdata
@pytest.mark.parametrize("kind", sorted(FFMPEG_FORMATS))
def test_ffmpeg_formats_decode_a_real_recording(real_data, kind):
    wav, sr = load_audio(real_data / LIBRI, 16000)
    clip = wav[: 3 * sr]
    data = encode_av(clip, sr, kind)
    out, out_sr = decode_audio(data, 16000)
    assert out_sr == 16000 and out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - clip.size) <= 2048 + 1152  # encoder priming and padding only
    # the decoded speech is the recording's (lossy codecs: correlation, not equality)
    assert _lagged_corr(out[16000:], clip[16000:32000]) > 0.9


def test_tree_scan_lists_ffmpeg_extensions(tmp_path):
    x = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    for kind, (_, _, suffix) in FFMPEG_FORMATS.items():
        assert suffix in AUDIO_EXTENSIONS
        f = tmp_path / "ds" / f"spk_{kind}" / f"u1{suffix}"
        f.parent.mkdir(parents=True)
        f.write_bytes(encode_av(x, 16000, kind))
    utts = scan_tree(tmp_path, with_durations=True)  # headers read through FFmpeg too
    assert all(0.95 < u.duration < 1.2 for u in utts), utts
    assert sorted(u.speaker for u in utts) == sorted(f"spk_{k}" for k in FFMPEG_FORMATS)
    for u in utts:
        assert load_audio(u.path, 16000)[0].size > 15000


def test_decode_bombs_are_refused_from_the_header(tmp_path):
    """The issue's 8 KB WAV claiming ~1 MHz (4.4 s, 916 MiB before) and 335 KB FLAC of 8
    channels at 655 kHz (37 s, 1.3 GiB before): refused before decoding, in bounded time and
    memory (peak RSS growth of a fresh process)."""
    paths = []
    for name, data in (("bomb.wav", wav_bomb()), ("bomb.flac", flac_bomb())):
        with pytest.raises(AudioLimitError) as e:
            decode_audio(data, 16000)
        assert e.value.code == "sample_rate_too_high" and "Hz" in str(e.value)
        paths.append(str(tmp_path / name))
        (tmp_path / name).write_bytes(data)
    for res in decode_in_subprocess(paths):
        assert res["error"] and "sample rate" in res["error"]
        assert res["seconds"] < 1.0 and res["rss_growth_mib"] < 50, res


def test_channels_and_budget_are_checked_before_decoding():
    from tests.hostile_audio import wav_many_channels

    with pytest.raises(AudioLimitError) as e:
        decode_audio(wav_many_channels(0.1, 33), 16000)
    assert e.value.code == "too_many_channels"
    one = wav_many_channels(2.0, 4)  # 8 channel-seconds
    budget = AudioBudget(20.0)
    decode_audio(one, 16000, budget=budget)
    decode_audio(one, 16000, budget=budget)
    with pytest.raises(AudioLimitError) as e:
        decode_audio(one, 16000, budget=budget)  # 24 > 20 channel-seconds
    assert e.value.code == "audio_budget_exceeded" and "budget of 20" in str(e.value)
    assert budget.used == pytest.approx(16.0)


def test_a_header_that_understates_its_length_cannot_make_it_decode_more():
    """A WebM whose Duration element claims 0.1 s while 3 s are inside: the read stops at the
    limit, not at the header's claim."""
    x = 0.1 * np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32)
    data = encode_av(x, 16000, "webm")
    i = data.find(b"\x44\x89")  # Matroska Info/Duration, an 8-byte float in ms
    assert i > 0 and data[i + 2] == 0x88
    lying = data[: i + 3] + struct.pack(">d", 100.0) + data[i + 11 :]
    assert decode_audio(lying, 16000)[0].size > 2.9 * 16000  # without a limit: all of it
    with pytest.raises(AudioLimitError) as e:
        decode_audio(lying, 16000, max_seconds=1.0)
    assert e.value.code == "audio_too_long"
    with pytest.raises(AudioLimitError) as e:
        decode_audio(lying, 16000, budget=AudioBudget(1.0))
    assert e.value.code == "audio_budget_exceeded"


def test_ffmpeg_never_probes_playlists_or_unknown_containers(tmp_path):
    secret = tmp_path / "secret.wav"
    secret.write_bytes(wav_bomb(16000))
    for data in (
        f"#EXTM3U\n#EXTINF:1,\nfile://{secret}\n#EXT-X-ENDLIST\n".encode(),
        f"ffconcat version 1.0\nfile '{secret}'\n".encode(),
        b"\x00" * 64,
    ):
        with pytest.raises(AudioError) as e:
            decode_audio(data, 16000)
        assert "cannot be decoded" in str(e.value) and str(secret) not in str(e.value)


def test_resampling_an_awkward_rate_is_bounded():
    x = np.random.default_rng(0).standard_normal(191_999).astype(np.float32)
    t = time.perf_counter()
    y = resample(x, 191_999, 16000)
    assert time.perf_counter() - t < 1.0 and y.shape == (16000,)
    tone = np.sin(2 * np.pi * 440 * np.arange(191_999) / 191_999).astype(np.float32)
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    # the approximated ratio keeps the pitch: the tone lines up with the exact one
    assert np.max(np.abs(resample(tone, 191_999, 16000)[200:-200] - ref[200:-200])) < 0.05

"""Codec pipeline and the compact codes format (models/pipelines/codec.py)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)  # models/ must import without Ray

from models import build_model  # noqa: E402
from models.checkpoint import save_checkpoint  # noqa: E402
from models.pipelines.codec import (  # noqa: E402
    HEADER_SIZE,
    CodecFormatError,
    CodecPipeline,
    EncodedAudio,
    pack_codes,
    unpack_codes,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pipeline() -> CodecPipeline:
    torch.manual_seed(0)
    return CodecPipeline(build_model("tinystream-tiny"), model_id="tinystream-tiny:test")


def _speechlike(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    return (wav + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_bit_packing_round_trip_all_widths():
    rng = np.random.default_rng(0)
    for bits in (1, 3, 8, 10, 13):
        values = rng.integers(0, 2**bits, size=37)
        data = pack_codes(values, bits)
        assert len(data) == math.ceil(37 * bits / 8)
        np.testing.assert_array_equal(unpack_codes(data, 37, bits), values)


def test_encode_decode_lengths_and_bytes_round_trip(pipeline):
    wav = _speechlike(0.55)  # not a multiple of the 256-sample hop
    enc = pipeline.encode(wav, 16000)
    assert enc.codes.shape == (4, math.ceil(wav.size / 256)) and enc.num_samples == wav.size
    assert enc.bitrate == 2250.0 == pipeline.bitrate()
    data = enc.to_bytes()
    model_id = enc.model_id.encode()
    assert data[:4] == b"VXRC"
    payload = math.ceil(enc.codes.size * 9 / 8)  # 512 codes -> 9 bits each
    assert len(data) == HEADER_SIZE + len(model_id) + payload
    back = EncodedAudio.from_bytes(data)
    np.testing.assert_array_equal(back.codes, enc.codes)
    assert (back.sample_rate, back.num_samples, back.model_id, back.codebook_size) == (
        16000,
        wav.size,
        "tinystream-tiny:test",
        512,
    )
    out = pipeline.decode(back)
    assert out.shape == wav.shape and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, pipeline.decode(enc))


def test_fewer_quantizers_fewer_bytes_and_prefix_codes(pipeline):
    wav = _speechlike(1.0)
    sizes = []
    full = pipeline.encode(wav, 16000)
    for n in range(1, 5):
        enc = pipeline.encode(wav, 16000, num_quantizers=n)
        np.testing.assert_array_equal(enc.codes, full.codes[:n])
        assert enc.bitrate == n * 9 * 62.5
        sizes.append(len(enc.to_bytes()))
        assert pipeline.decode(enc).shape == wav.shape
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    with pytest.raises(ValueError, match="num_quantizers"):
        pipeline.encode(wav, 16000, num_quantizers=5)


def test_chunked_encode_equals_whole_signal_and_resampling(pipeline):
    wav = _speechlike(1.3, seed=1)
    whole = pipeline.encode(wav, 16000)
    for chunk_seconds in (0.1, 0.35):
        chunked = pipeline.encode(wav, 16000, chunk_seconds=chunk_seconds)
        np.testing.assert_array_equal(chunked.codes, whole.codes)
        assert chunked.num_samples == whole.num_samples
    # other input rates are resampled to the model's; int16 PCM is accepted
    enc8 = pipeline.encode(wav[::2].copy(), 8000)
    assert enc8.sample_rate == 16000 and abs(enc8.num_samples - wav.size) <= 2
    pcm = (wav * 32767).astype(np.int16)
    assert pipeline.encode(pcm, 16000).codes.shape == whole.codes.shape


def test_corrupt_and_truncated_streams_are_rejected(pipeline):
    data = pipeline.encode(_speechlike(0.3), 16000).to_bytes()
    with pytest.raises(CodecFormatError, match="magic"):
        EncodedAudio.from_bytes(b"RIFF" + data[4:])
    with pytest.raises(CodecFormatError, match="version"):
        EncodedAudio.from_bytes(data[:4] + bytes([9]) + data[5:])
    with pytest.raises(CodecFormatError, match="truncated"):
        EncodedAudio.from_bytes(data[:-1])
    with pytest.raises(CodecFormatError, match="truncated header"):
        EncodedAudio.from_bytes(data[:20])
    with pytest.raises(CodecFormatError, match="trailing"):
        EncodedAudio.from_bytes(data + b"\0")
    with pytest.raises(ValueError):  # CodecFormatError is a ValueError
        EncodedAudio.from_bytes(b"")
    # every code at the maximum 9-bit value (511) is valid for 512 codes; with a codebook of
    # 300 (still 9 bits) it is out of range
    enc = EncodedAudio(
        codes=np.full((2, 3), 299), sample_rate=16000, num_samples=600, model_id="m",
        codebook_size=300, hop_length=256,
    )  # fmt: skip
    raw = bytearray(enc.to_bytes())
    raw[-4:] = b"\xff\xff\xff\xff"
    with pytest.raises(CodecFormatError, match="corrupt payload"):
        EncodedAudio.from_bytes(bytes(raw))
    with pytest.raises(ValueError, match="codes must lie"):
        EncodedAudio(np.full((1, 2), 512), 16000, 10, "m", 512, 256).to_bytes()


def test_decode_refuses_other_models_codes_and_bad_audio(pipeline):
    enc = pipeline.encode(_speechlike(0.2), 16000)
    enc.model_id = "soundstream-tiny:other"
    with pytest.raises(ValueError, match="same checkpoint"):
        pipeline.decode(enc)
    with pytest.raises(ValueError, match="mono"):
        pipeline.encode(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        pipeline.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="NaN"):
        pipeline.encode(np.full(100, np.nan, np.float32), 16000)


def test_from_checkpoint_model_id_and_identical_codes(tmp_path, pipeline):
    path = save_checkpoint(pipeline.model, tmp_path / "codec.pt")
    loaded = CodecPipeline.from_checkpoint(path)
    assert (
        loaded.model_id.startswith("tinystream:")
        and len(loaded.model_id) == len("tinystream:") + 12
    )
    assert loaded.sample_rate == 16000
    wav = _speechlike(0.4)
    np.testing.assert_array_equal(
        loaded.encode(wav, 16000).codes, pipeline.encode(wav, 16000).codes
    )
    path2 = save_checkpoint(
        pipeline.model, tmp_path / "codec2.pt", meta={"model_id": "my-codec-v1"}
    )
    assert CodecPipeline.from_checkpoint(path2).model_id == "my-codec-v1"

"""serve/audio_input.py without Ray: multipart parsing, allow-listed paths, limits, decoding."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sys

import httpx
import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

sys.modules.setdefault("ray", None)  # this layer must not need Ray

from serve.audio_input import (  # noqa: E402
    AudioLimits,
    ServiceError,
    load_source,
    parse_multipart,
    parse_request,
    read_body,
    resolve_allowed_path,
)
from serve.schemas import AudioSource, EnrollRequest, VerifyRequest  # noqa: E402

SR = 16000


def wav_bytes(seconds: float = 1.0, sr: int = SR, channels: int = 1, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    buf = io.BytesIO()
    sf.write(buf, data, sr, format=fmt)
    return buf.getvalue()


def limits(roots=()) -> AudioLimits:
    return AudioLimits(
        sample_rate=SR,
        min_seconds=0.5,
        max_seconds=5.0,
        max_bytes=1 << 20,
        allowed_roots=tuple(roots),
    )


def encode_multipart(files, data) -> tuple[bytes, str]:
    req = httpx.Request("POST", "http://x/", files=files, data=data)
    return req.read(), req.headers["content-type"]


def test_multipart_round_trip_keeps_binary_bytes_exact():
    blob = bytes(range(256)) * 7 + b"\r\n--\r\n\r\n"  # boundary-like and CRLF bytes inside
    body, ctype = encode_multipart(
        [("audio", ("a.wav", blob)), ("audio", ("b.wav", b"xyz"))],
        {"name": "Ann", "groups": ["g1", "g2"]},
    )
    fields, files = parse_multipart(body, ctype)
    assert files["audio"] == [blob, b"xyz"]
    assert fields == {"name": ["Ann"], "groups": ["g1", "g2"]}


def test_parse_request_multipart_and_json_agree():
    wav = wav_bytes()
    body, ctype = encode_multipart(
        [("audio", ("a.wav", wav))], {"name": "Ann", "groups": ["g1", "g2"], "metadata": '{"k": 1}'}
    )
    req = parse_request(body, ctype, EnrollRequest)
    assert req.name == "Ann" and req.groups == ["g1", "g2"] and req.metadata == {"k": 1}
    assert req.audio[0]._raw == wav
    js = parse_request(
        (
            '{"name": "Ann", "groups": ["g1", "g2"], "audio": ["'
            + base64.b64encode(wav).decode()
            + '"]}'
        ).encode(),
        "application/json",
        EnrollRequest,
    )
    assert js.name == req.name and js.groups == req.groups
    assert load_source(js.audio[0], "audio", limits()).shape == (SR,)


def test_parse_request_errors():
    with pytest.raises(ServiceError) as e:
        parse_request(b"", "application/json", VerifyRequest)
    assert e.value.status == 400 and e.value.code == "empty_body"
    with pytest.raises(ServiceError) as e:
        parse_request(b"{not json", "application/json", VerifyRequest)
    assert e.value.status == 400 and e.value.code == "invalid_json"
    with pytest.raises(ValidationError, match="audio_b"):
        parse_request(b'{"audio_a": "AAAA"}', "application/json", VerifyRequest)
    with pytest.raises(ServiceError) as e:
        parse_request(b"abc", "text/plain", VerifyRequest)
    assert e.value.status == 415
    body, ctype = encode_multipart([("audio_a", ("a.wav", b"x"))], {"bogus": "1"})
    with pytest.raises(ServiceError, match="bogus"):
        parse_request(body, ctype, VerifyRequest)
    with pytest.raises(ServiceError, match="closing boundary"):
        parse_request(body[:-10], ctype, VerifyRequest)
    with pytest.raises(ValidationError, match="exactly one"):
        AudioSource.model_validate({"base64": "AA==", "path": "/x"})


class _FakeRequest:
    def __init__(self, body: bytes, declared: bool = True):
        self.headers = {"content-length": str(len(body))} if declared else {}
        self._body = body

    async def stream(self):
        for i in range(0, len(self._body), 1000):
            yield self._body[i : i + 1000]


def test_read_body_limits_declared_and_chunked_bodies():
    assert asyncio.run(read_body(_FakeRequest(b"x" * 5000), 5000)) == b"x" * 5000
    for declared in (True, False):
        with pytest.raises(ServiceError) as e:
            asyncio.run(read_body(_FakeRequest(b"x" * 5001, declared), 5000))
        assert e.value.status == 413


def test_allowed_paths_refuse_escapes_and_symlinks(tmp_path):
    root = tmp_path / "root"
    (root / "spk").mkdir(parents=True)
    inside = root / "spk" / "a.wav"
    inside.write_bytes(wav_bytes())
    outside = tmp_path / "secret.wav"
    outside.write_bytes(wav_bytes())
    os.symlink(outside, root / "link.wav")
    roots = (root.resolve(),)
    assert resolve_allowed_path(str(inside), roots) == inside.resolve()
    assert resolve_allowed_path("spk/a.wav", roots) == inside.resolve()
    for bad in (
        str(outside),
        str(root / "spk" / ".." / ".." / "secret.wav"),
        str(root / "link.wav"),
    ):
        with pytest.raises(ServiceError) as e:
            resolve_allowed_path(bad, roots)
        assert e.value.status == 403
    with pytest.raises(ServiceError) as e:
        resolve_allowed_path(str(inside), ())
    assert e.value.status == 403
    lim = limits(roots)
    assert load_source(AudioSource(path=str(inside)), "audio", lim).shape == (SR,)
    with pytest.raises(ServiceError) as e:
        load_source(AudioSource(path=str(root / "missing.wav")), "audio", lim)
    assert e.value.status == 404


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_audio"),
        (b"this is not audio at all" * 10, "invalid_audio"),
        (wav_bytes(1.0)[:-4000], "truncated_audio"),
        (wav_bytes(0.2), "audio_too_short"),
        (wav_bytes(6.0), "audio_too_long"),
    ],
)
def test_bad_audio_is_a_400_that_says_why(data, code):
    with pytest.raises(ServiceError) as e:
        load_source(AudioSource.from_upload(data), "audio", limits())
    assert e.value.status == 400 and e.value.code == code
    assert e.value.message.startswith("audio: ")


def test_formats_resample_and_downmix():
    for fmt in ("WAV", "FLAC", "OGG"):
        wav = load_source(
            AudioSource.from_upload(wav_bytes(1.0, sr=8000, channels=2, fmt=fmt)), "a", limits()
        )
        assert wav.ndim == 1 and abs(wav.size - SR) <= 1 and wav.dtype == np.float32
    with pytest.raises(ServiceError) as e:
        load_source(AudioSource(base64="not base64!!"), "audio", limits())
    assert e.value.code == "invalid_base64"

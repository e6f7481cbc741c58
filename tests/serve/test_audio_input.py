"""serve/audio_input.py without Ray: request parsing (Starlette's multipart parser over a real
ASGI request), body limits, allow-listed paths, decoding."""

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

from starlette.requests import Request  # noqa: E402

from serve.audio_input import (  # noqa: E402
    AudioLimits,
    load_source,
    parse_request,
    resolve_allowed_path,
)
from serve.errors import ServiceError  # noqa: E402
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


class _Receive:
    """An ASGI ``receive`` delivering ``body`` in 1000-byte chunks; counts what was read."""

    def __init__(self, body: bytes) -> None:
        self.chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]
        self.delivered = 0

    async def __call__(self) -> dict:
        chunk = self.chunks[self.delivered]
        self.delivered += 1
        return {
            "type": "http.request",
            "body": chunk,
            "more_body": self.delivered < len(self.chunks),
        }


def make_request(body: bytes, ctype: str | None, declared: bool = True) -> tuple[Request, _Receive]:
    headers = [(b"content-type", ctype.encode())] if ctype else []
    if declared:
        headers.append((b"content-length", str(len(body)).encode()))
    receive = _Receive(body)
    return Request({"type": "http", "method": "POST", "headers": headers}, receive), receive


def parse(body: bytes, ctype: str | None, model, max_bytes: int = 1 << 20, max_files: int = 8):
    request, _ = make_request(body, ctype)
    return asyncio.run(parse_request(request, model, max_bytes=max_bytes, max_files=max_files))


def test_multipart_keeps_binary_bytes_exact_and_fills_the_model():
    blob = wav_bytes() + bytes(range(256)) * 7 + b"\r\n--\r\n\r\n"  # boundary-like bytes
    body, ctype = encode_multipart(
        [("audio", ("a.wav", blob)), ("audio", ("b.wav", b"xyz"))],
        {"name": "Ann", "groups": ["g1", "g2"], "metadata": '{"k": 1}'},
    )
    req = parse(body, ctype, EnrollRequest)
    assert [a._raw for a in req.audio] == [blob, b"xyz"]
    assert req.name == "Ann" and req.groups == ["g1", "g2"] and req.metadata == {"k": 1}


def test_parse_request_multipart_and_json_agree():
    wav = wav_bytes()
    body, ctype = encode_multipart(
        [("audio", ("a.wav", wav))], {"name": "Ann", "groups": ["g1", "g2"], "metadata": '{"k": 1}'}
    )
    req = parse(body, ctype, EnrollRequest)
    js = parse(
        (
            '{"name": "Ann", "groups": ["g1", "g2"], "metadata": {"k": 1}, "audio": ["'
            + base64.b64encode(wav).decode()
            + '"]}'
        ).encode(),
        "application/json",
        EnrollRequest,
    )
    assert (js.name, js.groups, js.metadata) == (req.name, req.groups, req.metadata)
    up = load_source(req.audio[0], "audio", limits())
    assert np.array_equal(load_source(js.audio[0], "audio", limits()), up) and up.shape == (SR,)


def _service_error(body: bytes, ctype: str | None, model=VerifyRequest, **kw) -> ServiceError:
    with pytest.raises(ServiceError) as e:
        parse(body, ctype, model, **kw)
    return e.value


def test_parse_request_errors():
    err = _service_error(b"", "application/json")
    assert (err.status, err.code) == (400, "empty_body")
    err = _service_error(b"{not json", "application/json")
    assert (err.status, err.code) == (400, "invalid_json")
    with pytest.raises(ValidationError, match="audio_b"):
        parse(b'{"audio_a": "AAAA"}', "application/json", VerifyRequest)
    assert _service_error(b"abc", "text/plain").status == 415
    body, ctype = encode_multipart([("audio_a", ("a.wav", b"x"))], {"bogus": "1"})
    err = _service_error(body, ctype)
    assert err.status == 422 and "bogus" in err.message
    err = _service_error(body, "multipart/form-data")  # no boundary
    assert (err.status, err.code) == (400, "bad_multipart")
    err = _service_error(b"", ctype)
    assert (err.status, err.code) == (400, "empty_body")
    one, one_type = encode_multipart([("audio_a", ("a.wav", b"x" * 100))], {})
    err = _service_error(one[:-10], one_type)  # cut inside the closing boundary
    assert (err.status, err.code) == (400, "bad_multipart") and "closing boundary" in err.message
    many, ctype = encode_multipart([("candidates", ("c.wav", b"x"))] * 9, {})
    err = _service_error(many, ctype, max_files=8)
    assert (err.status, err.code) == (413, "too_many_parts")
    with pytest.raises(ValidationError, match="exactly one"):
        AudioSource.model_validate({"base64": "AA==", "path": "/x"})


@pytest.mark.parametrize("kind", ["json", "multipart"])
def test_body_limit_declared_and_chunked(kind):
    """413 from Content-Length at once, and from the byte count when the length is not declared,
    before the rest of the body is read."""
    if kind == "json":
        ok = b'{"audio_a": "' + b"A" * 4000 + b'", "audio_b": "AAAA"}'
        big = b'{"audio_a": "' + b"A" * 20_000 + b'"}'
        ok_type = big_type = "application/json"
    else:
        ok, ok_type = encode_multipart(
            [("audio_a", ("a", b"x" * 4000)), ("audio_b", ("b", b"y"))], {}
        )
        big, big_type = encode_multipart([("audio_a", ("a", b"x" * 20_000))], {})
    req = parse(ok, ok_type, VerifyRequest, max_bytes=5000)
    assert req.audio_a is not None and len(ok) <= 5000
    for declared in (True, False):
        request, receive = make_request(big, big_type, declared)
        with pytest.raises(ServiceError) as e:
            asyncio.run(parse_request(request, VerifyRequest, max_bytes=5000, max_files=8))
        assert (e.value.status, e.value.code) == (413, "request_too_large")
        # Declared: nothing read; chunked: stopped at the first chunk past the limit.
        assert receive.delivered == (0 if declared else 6)


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


def test_allowed_path_symlink_swap_race_never_escapes(tmp_path):
    """A folder in the root swapped for a symlink to an outside folder while files are read
    through it: 400 tries (bounded), 0 reads of the outside file; both states are hit."""
    import threading

    from serve.audio_input import read_allowed_file

    root, outside = (tmp_path / "root").resolve(), (tmp_path / "out").resolve()
    (root / "d").mkdir(parents=True)
    outside.mkdir()
    (root / "d" / "a.wav").write_bytes(b"INSIDE")
    (outside / "a.wav").write_bytes(b"OUTSIDE")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():  # bounded: stopped after the 400 tries
            os.rename(root / "d", root / "d.real")
            os.symlink(outside, root / "d")
            os.unlink(root / "d")
            os.rename(root / "d.real", root / "d")

    t = threading.Thread(target=swap, daemon=True)
    t.start()
    seen: dict = {}
    try:
        for _ in range(400):
            try:
                got = read_allowed_file("d/a.wav", (root,), 100, "audio").decode()
            except ServiceError as exc:
                assert str(outside) not in exc.message and str(root) not in exc.message
                got = exc.status
            seen[got] = seen.get(got, 0) + 1
    finally:
        stop.set()
        t.join(timeout=5)
    assert "OUTSIDE" not in seen and seen.get("INSIDE", 0) > 0, seen

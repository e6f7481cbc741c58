"""serve/auth.py and serve/keys.py without Ray: keys, scopes, the keyless loopback mode, and the
JSON count and raw-sample checks of serve/audio_input.py. Over HTTP: test_security_edge.py."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import time

import numpy as np
import pytest

sys.modules.setdefault("ray", None)  # this layer must not need Ray

from starlette.requests import Request  # noqa: E402

from serve.audio_input import check_json_counts, parse_request, samples_upload  # noqa: E402
from serve.auth import (  # noqa: E402
    ENV_VAR,
    ROUTE_SCOPES,
    Authorizer,
    KeyRing,
    hash_key,
    is_loopback,
    load_keys,
    required_scope,
)
from serve.errors import ServiceError  # noqa: E402
from serve.keys import main as keys_main  # noqa: E402
from serve.schemas import AudioSource, ConfigUpdate, VerifyBatchRequest  # noqa: E402


def _error(fn, *args, **kwargs) -> ServiceError:
    with pytest.raises(ServiceError) as e:
        fn(*args, **kwargs)
    return e.value


def test_keys_cli_prints_the_key_once_and_stores_only_its_hash(tmp_path, capsys):
    path = tmp_path / "keys.json"
    keys_main(["add", "ops", "--scopes", "read,enroll", "--file", str(path)])
    key = capsys.readouterr().out.strip()
    assert key.startswith("vxr_") and len(key) >= 40
    text = path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(text) == {"ops": {"hash": hash_key(key), "scopes": ["enroll", "read"]}}
    with pytest.raises(SystemExit):  # same name twice
        keys_main(["add", "ops", "--scopes", "read", "--file", str(path)])
    with pytest.raises(SystemExit):  # unknown scope
        keys_main(["add", "x", "--scopes", "root", "--file", str(path)])
    (found,) = load_keys(str(path), environ={})
    assert found.name == "ops" and found.scopes == {"read", "enroll"}
    keys_main(["remove", "ops", "--file", str(path)])
    assert load_keys(str(path), environ={}) == []


def test_keys_from_the_environment_and_bad_records():
    env = {ENV_VAR: json.dumps({"ci": {"hash": hash_key("k"), "scopes": ["admin"]}})}
    (key,) = load_keys(None, env)
    assert key.name == "ci" and key.allows("enroll")  # admin may call every route
    for bad in (
        {"x": {"hash": "md5:00", "scopes": ["read"]}},
        {"x": {"hash": hash_key("k"), "scopes": ["root"]}},
        {"x": {"hash": hash_key("k"), "scopes": "read"}},
        {"x": {"hash": hash_key("k")}},
    ):
        with pytest.raises(ValueError):
            load_keys(None, {ENV_VAR: json.dumps(bad)})
    with pytest.raises(FileNotFoundError, match="serve.keys add"):
        load_keys("/nonexistent/keys.json", {})


def test_scopes_route_table_and_closed_default():
    assert required_scope("GET", "/health") is None
    assert required_scope("POST", "/config") == "admin"
    assert required_scope("GET", "/config") == "read"
    assert required_scope("DELETE", "/speakers/{speaker_id}") == "admin"
    assert required_scope("POST", "/speakers/import") == "admin"
    assert required_scope("POST", "/speakers") == "enroll"
    # a route nobody mapped (added later) needs admin
    assert ("POST", "/some/new/route") not in ROUTE_SCOPES
    assert required_scope("POST", "/some/new/route") == "admin"

    ring = KeyRing(load_keys(None, {ENV_VAR: json.dumps({
        "r": {"hash": hash_key("read-key"), "scopes": ["read"]},
        "e": {"hash": hash_key("enroll-key"), "scopes": ["enroll"]},
    })}))  # fmt: skip
    auth = Authorizer(ring)
    assert auth.check("GET", "/health", None, "evil.example") is None  # open
    assert auth.check("POST", "/verify", "Bearer read-key", None) == "r"
    assert auth.check("POST", "/verify", "bearer  read-key ", None) == "r"
    for header in (None, "", "Bearer", "Basic cmVhZA==", "Bearer wrong", "read-key"):
        err = _error(auth.check, "POST", "/verify", header, None)
        assert (err.status, err.code) == (401, "unauthorized")
        assert err.headers == {"WWW-Authenticate": "Bearer"}
    err = _error(auth.check, "POST", "/config", "Bearer read-key", None)
    assert (err.status, err.code) == (403, "insufficient_scope") and "admin" in err.message
    err = _error(auth.check, "POST", "/verify", "Bearer enroll-key", None)
    assert err.status == 403
    assert auth.check("POST", "/speakers", "Bearer enroll-key", None) == "e"


def test_keyless_mode_answers_loopback_hosts_only():
    auth = Authorizer(None)
    for host in ("127.0.0.1:8000", "localhost", "[::1]:80", "127.9.9.9"):
        assert is_loopback(host)
        assert auth.check("POST", "/config", None, host) == "-"
    for host in ("evil.example", "evil.example:8000", "10.0.0.1:8000", "0.0.0.0", "", None):
        assert not is_loopback(host)
        err = _error(auth.check, "POST", "/config", None, host)
        assert (err.status, err.code) == (403, "loopback_only")


def _request(body: bytes, ctype: str) -> Request:
    chunks = [body]

    async def receive() -> dict:
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def _parse(body: bytes, ctype: str, model, **kw):
    kw = {"max_bytes": 32 << 20, "max_files": 65, **kw}
    return asyncio.run(parse_request(_request(body, ctype), model, **kw))


def test_strict_content_types_and_json_only_cap():
    for ctype in ("text/plain", "application/x-www-form-urlencoded", ""):
        err = _error(_parse, b'{"threshold": -1}', ctype, ConfigUpdate)
        assert (err.status, err.code) == (415, "unsupported_media_type")
    # a JSON-only model takes no multipart, and its bodies are capped small
    err = _error(_parse, b"--x--", "multipart/form-data; boundary=x", ConfigUpdate)
    assert err.status == 415
    big = b'{"threshold": 0.5, "model": "' + b"m" * 5000 + b'"}'
    err = _error(_parse, big, "application/json", ConfigUpdate, max_json_bytes=4096)
    assert (err.status, err.code) == (413, "request_too_large")
    assert _parse(b'{"threshold": 0.5}', "application/json", ConfigUpdate).threshold == 0.5


def test_json_counts_refuse_a_huge_list_before_parsing_it():
    item = b'{"path": "x"},'
    body = b'{"reference": "AAAA", "candidates": [' + item * 800_000 + b'{"path": "x"}]}'
    t0 = time.perf_counter()
    err = _error(_parse, body, "application/json", VerifyBatchRequest)
    assert time.perf_counter() - t0 < 1.0
    assert (err.status, err.code) == (413, "too_many_items")
    # bare base64 strings count too; 65 items pass, ~1000 do not
    ok = b'{"reference": "AAAA", "candidates": [' + b",".join([b'"AAAA"'] * 64) + b"]}"
    assert len(_parse(ok, "application/json", VerifyBatchRequest).candidates) == 64
    many = b'{"reference": "AAAA", "candidates": [' + b",".join([b'"AAAA"'] * 1000) + b"]}"
    err = _error(check_json_counts, many, max_items=65, max_values=10**6)
    assert err.code == "too_many_items"
    # numbers: bounded by max_json_values
    samples = b'{"audio": {"samples": [' + b"0," * 5000 + b'0], "sample_rate": 16000}}'
    with pytest.raises(ServiceError):
        check_json_counts(samples, max_items=1, max_values=4000)
    check_json_counts(samples, max_items=1, max_values=6000)


def test_raw_samples_become_an_upload_within_the_limits():
    x = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    src = AudioSource(samples=x.tolist(), sample_rate=16000)
    up = samples_upload(src, "audio", max_seconds=5.0)
    assert up._raw is not None and up.samples is None
    import soundfile as sf

    data, sr = sf.read(__import__("io").BytesIO(up._raw), dtype="float32")
    assert sr == 16000 and np.array_equal(data, x)
    err = _error(samples_upload, AudioSource(samples=[0.0] * 10, sample_rate=12345), "a", 5.0)
    assert err.code == "invalid_sample_rate"
    err = _error(samples_upload, AudioSource(samples=[0.0] * 8001, sample_rate=8000), "a", 1.0)
    assert err.code == "audio_too_long"
    with pytest.raises(ValueError, match="sample_rate"):
        AudioSource(samples=[0.0])
    with pytest.raises(ValueError, match="exactly one"):
        AudioSource(samples=[0.0], sample_rate=16000, path="/x")

"""The HTTP edge of the speaker service under hostile input, over real HTTP on loopback
(issue 13): one test per defect class. Each builds its own hostile request and asserts the
refusal code and a bounded time; bodies also a bounded memory peak of the ingress replica.

One app for the module (``tests/serve/helpers.py``: keys per scope, 25 MB bodies as shipped,
so the JSON count check, not the byte cap, is what refuses the big list). Its first request
that needs the model's info is made with the checkpoint moved away: a real model-deployment
error, answered 500 (``test_internal_errors_...``).
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.serve.helpers import (
    KEYS,
    app_args,
    expect_error,
    expect_ok,
    http_client,
    running_app,
    state_address,
)

pytestmark = pytest.mark.ray

SR = 16000
APP = "security_edge"
GOOD_ORIGIN = "https://app.example"  # the one origin this app's CORS allows


def _wav(seconds: float, seed: int) -> bytes:
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _ingress_pid() -> int:
    from ray.util.state import list_actors

    (actor,) = list_actors(
        address=state_address(),
        filters=[("class_name", "=", f"ServeReplica:{APP}:VoxrayService"), ("state", "=", "ALIVE")],
    )
    return int(actor["pid"])


def _peak_rss_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def svc(ray_cluster, tmp_path_factory):
    import models

    root = tmp_path_factory.mktemp("edge")
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "a.pt")
    args = app_args(
        ckpt,
        root,
        max_request_mb=25.0,
        diarization={"enabled": False},
        cors_origins=[GOOD_ORIGIN],
    )
    clip = base64.b64encode(_wav(1.0, 1)).decode()
    with running_app(args, APP) as client:
        moved = ckpt.rename(root / "moved-away.pt")
        try:  # the model deployment fails to describe its model: a real internal error
            first = client.post("/verify", json={"audio_a": clip, "audio_b": clip})
        finally:
            moved.rename(ckpt)
        yield {"client": client, "port": client.base_url.port, "root": root, "first": first}


def _timed(fn, *args, **kwargs) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    r = fn(*args, **kwargs)
    return r, time.perf_counter() - t0


def test_keys_and_scopes_gate_every_route(svc):
    port = svc["port"]
    with (
        http_client(port, key=None) as anon,
        http_client(port, key="vxr_" + "x" * 43) as wrong,
        http_client(port, key=KEYS["read"]) as reader,
        http_client(port, key=KEYS["enroll"]) as enroller,
        http_client(port, key=KEYS["admin"]) as admin,
    ):
        assert expect_ok(anon.get("/health"))["status"] == "ok"  # open, for load balancers
        assert anon.get("/openapi.json").status_code == 200  # the API's description, no data
        for client in (anon, wrong):
            for method, path in [("GET", "/config"), ("POST", "/verify"), ("GET", "/speakers")]:
                r, dt = _timed(client.request, method, path, json={})
                expect_error(r, 401, "unauthorized")
                assert r.headers["www-authenticate"] == "Bearer" and dt < 2.0
        assert expect_ok(reader.get("/config"))["threshold"] is not None
        cases = [
            (reader, "POST", "/config", {"threshold": 0.9}),
            (reader, "DELETE", "/speakers/abc", None),
            (enroller, "DELETE", "/speakers/abc", None),
            (enroller, "POST", "/speakers/import", {"path": "x"}),
            (reader, "POST", "/galleries", {"group": "g", "labels": ["a"], "embeddings": [[1.0]]}),
            (reader, "POST", "/speakers", {"name": "x", "audio": ["AAAA"]}),
            (enroller, "POST", "/verify", {"audio_a": "AAAA", "audio_b": "AAAA"}),
        ]
        for client, method, path, body in cases:
            r, dt = _timed(client.request, method, path, json=body)
            msg = expect_error(r, 403, "insufficient_scope")
            assert "scope" in msg and dt < 2.0
        # the admin key passes the gate (and meets the route's own answer)
        expect_error(admin.delete("/speakers/abc"), 404, "unknown_speaker")
        assert expect_ok(enroller.get("/health"))["status"] == "ok"


def test_cross_site_posts_cannot_change_the_threshold(svc):
    """A page on another origin can send "simple" requests (form-urlencoded, multipart,
    text/plain) without a preflight; none reaches /config, even carrying the admin key."""
    client = svc["client"]
    before = expect_ok(client.get("/config"))["threshold"]
    evil = {"Origin": "http://evil.example"}
    with http_client(svc["port"], key=None) as anon:
        expect_error(anon.post("/config", data={"threshold": "-1"}, headers=evil), 401)
    for kwargs in (
        {"data": {"threshold": "-1"}},  # application/x-www-form-urlencoded
        {"content": b'{"threshold": -1}', "headers": {"Content-Type": "text/plain"}},
        {"files": {"threshold": ("t", b"-1")}},  # multipart/form-data
        {"content": b'{"threshold": -1}'},  # no Content-Type at all
    ):
        kwargs["headers"] = {**kwargs.get("headers", {}), **evil}
        r, dt = _timed(client.post, "/config", **kwargs)
        expect_error(r, 415, "unsupported_media_type")
        assert dt < 2.0 and "access-control-allow-origin" not in r.headers
    assert expect_ok(client.get("/config"))["threshold"] == before
    # CORS allows only the configured origin: a preflight from elsewhere gets no allow-origin
    preflight = {"Access-Control-Request-Method": "POST"}
    r = client.options("/config", headers={**evil, **preflight})
    assert "access-control-allow-origin" not in r.headers
    r = client.options("/config", headers={"Origin": GOOD_ORIGIN, **preflight})
    assert r.headers["access-control-allow-origin"] == GOOD_ORIGIN


def test_oversized_json_list_is_refused_fast_in_bounded_memory(svc):
    """10 MB of /verify_batch candidates (the issue's 12 s, > 1 GiB parse on main): refused by
    the item count before parsing, while /health keeps answering."""
    item = b'{"path": "x"},'
    body = b'{"reference": "AAAA", "candidates": [' + item * 750_000 + b'{"path": "x"}]}'
    assert len(body) > 10_000_000
    pid = _ingress_pid()
    base = _rss_kb(pid, "VmRSS")
    _peak_rss_reset(pid)
    health: list[tuple[int, float]] = []

    def probe() -> None:
        with http_client(svc["port"], key=None, timeout=10) as c:
            for _ in range(5):
                r, dt = _timed(c.get, "/health")
                health.append((r.status_code, dt))

    t = threading.Thread(target=probe)
    t0 = time.perf_counter()
    t.start()
    headers = {"Content-Type": "application/json"}
    r = svc["client"].post("/verify_batch", content=body, headers=headers)
    elapsed = time.perf_counter() - t0
    t.join(timeout=30)
    grew_mb = (_rss_kb(pid, "VmHWM") - base) / 1024
    print(
        f"\n10 MB /verify_batch: {r.status_code} in {elapsed:.3f} s, ingress peak +{grew_mb:.0f} MB"
    )
    expect_error(r, 413, "too_many_items")
    assert elapsed < 3.0  # main: 5.7 s in the service, 12 s in the issue (a 2-core CI machine)
    assert grew_mb < 100  # the body itself (10 MB) and its join; main: > 1 GiB
    assert health and all(code == 200 and dt < 3.0 for code, dt in health), health

    # the same body chunked (no Content-Length) meets the same count
    r = svc["client"].post("/verify_batch", content=iter([body[:5_000_000], body[5_000_000:]]),
                           headers=headers)  # fmt: skip
    expect_error(r, 413, "too_many_items")
    # a JSON-only route has a small byte cap (1 MB), chunked or declared
    big = b'{"threshold": 0.5, "model": "' + b"m" * 2_000_000 + b'"}'
    for content in (big, iter([big[:1_000_000], big[1_000_000:]])):
        r, dt = _timed(svc["client"].post, "/config", content=content, headers=headers)
        expect_error(r, 413, "request_too_large")
        assert dt < 3.0


def test_internal_errors_carry_a_request_id_and_no_details(svc):
    r = svc["first"]
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["code"] == "internal_error" and err["request_id"]
    assert r.headers["x-request-id"] == err["request_id"]
    for leak in (str(svc["root"]), "moved-away", "a.pt", "FileNotFoundError", "Traceback", "/"):
        assert leak not in err["message"], err
    assert set(err) == {"code", "message", "request_id"}
    # the service recovers once the model is back
    assert expect_ok(svc["client"].get("/health"))["status"] == "ok"


def test_raw_samples_are_audio_within_the_same_limits(svc):
    client = svc["client"]
    wav = _wav(1.0, 2)
    x, _ = sf.read(io.BytesIO(wav), dtype="float32")
    raw = expect_ok(
        client.post(
            "/extract_embedding", json={"audio": {"samples": x.tolist(), "sample_rate": SR}}
        )
    )
    up = expect_ok(client.post("/extract_embedding", files={"audio": ("a.wav", wav)}))
    assert np.allclose(raw["embedding"], up["embedding"], atol=1e-6)
    for audio, status, code in [
        ({"samples": x.tolist(), "sample_rate": 12345}, 400, "invalid_sample_rate"),
        ({"samples": [0.0] * (6 * SR), "sample_rate": SR}, 400, "audio_too_long"),  # max 5 s
        ({"samples": [0.0] * 100, "sample_rate": SR}, 400, "audio_too_short"),
    ]:
        expect_error(client.post("/extract_embedding", json={"audio": audio}), status, code)
    # 3 M samples (past max_json_values): refused from the byte counts, before any parsing
    body = b'{"audio": {"samples": [' + b"0," * 3_000_000 + b'0], "sample_rate": 16000}}'
    r, dt = _timed(client.post, "/extract_embedding", content=body,
                   headers={"Content-Type": "application/json"})  # fmt: skip
    expect_error(r, 413, "too_many_items")
    assert dt < 3.0


def test_behaviour_changes_are_logged_with_the_key_name(svc):
    from ray.util.state import get_log, list_actors

    client = svc["client"]
    thr = expect_ok(client.get("/config"))["threshold"]
    expect_ok(client.post("/config", json={"threshold": thr}))
    address = state_address()
    actors = list_actors(
        address=address,
        filters=[("class_name", "=", f"ServeReplica:{APP}:VoxrayService"), ("state", "=", "ALIVE")],
    )
    assert actors

    def logged() -> bool:
        for actor in actors:
            for suffix in ("err", "out"):
                try:
                    chunks = get_log(
                        address=address, actor_id=actor["actor_id"], suffix=suffix, tail=500
                    )
                    if "audit: key 'admin' set threshold" in "".join(chunks):
                        return True
                except Exception:  # noqa: BLE001 - a log file not written yet: look again
                    pass
        return False

    deadline = time.monotonic() + 60  # the log agent ships lines with a delay under load
    while not (found := logged()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert found, "no audit line naming the admin key in the ingress's logs after 60 s"

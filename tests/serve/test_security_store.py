"""Store correctness, durable configuration and health of the speaker service, over HTTP.

One real app on loopback (two models: random-weight CAM++ ``default`` and x-vector ``alt``, of
different embedding dimensions) whose enrollment database the tests also read directly. The
races are provoked by timing: each round measures how long the slow request (a re-enrollment or
enrollment of many clips) takes, and sends the competing request (delete, model switch) inside
that window; the invariants must hold whichever request commits first.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.serve.helpers import (
    app_args,
    b64,
    expect_error,
    expect_ok,
    noise_wav,
    replica_pids,
    running_app,
)

pytestmark = pytest.mark.ray

APP = "speaker_sec_store"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import models

    root = tmp_path_factory.mktemp("sec_store")
    a = models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "a.pt")
    b = models.save_checkpoint(models.build_model("xvector-tiny").eval(), root / "b.pt")
    return root, a, b


def _args(files) -> dict:
    root, a, b = files
    return app_args(
        a,
        root,
        models={"alt": {"path": str(b)}},
        max_request_mb=4.0,
        max_metadata_bytes=256,
        health_timeout_s=1.0,
    )


@pytest.fixture(scope="module")
def service(ray_cluster, files):
    args = _args(files)
    with running_app(args, APP, timeout=120) as c:
        yield c, args


def _clips(n: int, seconds: float = 2.0) -> list[str]:
    return [b64(noise_wav(seconds, seed=i)) for i in range(n)]


def _db(args: dict) -> sqlite3.Connection:
    return sqlite3.connect(args["db"], timeout=30)


def _clear(c) -> None:
    for sp in expect_ok(c.get("/speakers"))["speakers"]:
        c.delete(f"/speakers/{sp['id']}")


def _race(slow, fast, delay: float) -> tuple:
    """Run ``slow()`` in a thread, ``fast()`` ``delay`` s later; both results."""
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("slow", slow()))
    t.start()
    time.sleep(delay)
    fast_result = fast()
    t.join(timeout=120)
    assert not t.is_alive()
    return out["slow"], fast_result


def test_metadata_limit(service):
    c, _ = service
    clip = _clips(1)
    r = c.post("/speakers", json={"name": "m", "audio": clip, "metadata": {"x": "y" * 300}})
    assert "at most 256" in expect_error(r, 413, "metadata_too_large")
    sp = expect_ok(c.post("/speakers", json={"name": "m", "audio": clip, "metadata": {"a": 1}}))
    # a re-enrollment's merged metadata is held to the same limit, atomically
    r = c.post(
        "/speakers",
        json={"speaker_id": sp["id"], "audio": clip, "metadata": {"b": "z" * 250}},
    )
    expect_error(r, 413, "metadata_too_large")
    assert expect_ok(c.get(f"/speakers/{sp['id']}"))["num_embeddings"] == 1
    c.delete(f"/speakers/{sp['id']}")


def test_deleted_speaker_stays_deleted_under_reenrollment(service):
    """A speaker deleted while its re-enrollment is being embedded does not come back: the
    re-enrollment's transaction finds it gone and answers 404."""
    c, _ = service
    clips = _clips(16)
    seen_404 = 0
    for frac in (0.2, 0.4, 0.6, 0.3, 0.5):
        sid = expect_ok(c.post("/speakers", json={"name": "r", "audio": clips[:1]}))["id"]
        t0 = time.monotonic()  # the window: one re-enrollment of 16 clips
        expect_ok(c.post("/speakers", json={"speaker_id": sid, "audio": clips}))
        window = time.monotonic() - t0
        slow, fast = _race(
            lambda sid=sid: c.post("/speakers", json={"speaker_id": sid, "audio": clips}),
            lambda sid=sid: c.delete(f"/speakers/{sid}"),
            frac * window,
        )
        expect_ok(fast)
        assert slow.status_code in (200, 404), slow.text
        seen_404 += slow.status_code == 404
        expect_error(c.get(f"/speakers/{sid}"), 404, "unknown_speaker")
        with _db(service[1]) as db:  # nothing of it is left behind
            assert db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE speaker_id = ?", (sid,)
            ).fetchone() == (0,)
    assert seen_404 >= 1, "no round hit the race window: the test did not test anything"


def _check_consistent(c, args: dict) -> None:
    """The store holds only embeddings of the active model, so /identify answers."""
    cfg = expect_ok(c.get("/config"))
    dims = {m["model_id"]: m["embed_dim"] for m in cfg["models"]}
    speakers = expect_ok(c.get("/speakers"))["speakers"]
    for sp in speakers:
        assert sp["model_id"] == cfg["model"]["model_id"], (sp, cfg["model"])
        assert sp["embed_dim"] == dims[sp["model_id"]]
    with _db(args) as db:
        model_id, dim = db.execute("SELECT model_id, embed_dim FROM meta").fetchone()
        vec_bytes = {r[0] for r in db.execute("SELECT length(vector) FROM embeddings")}
    if speakers:
        assert (model_id, dim) == (cfg["model"]["model_id"], cfg["model"]["embed_dim"])
        assert vec_bytes == {4 * dim}
    assert expect_ok(c.get("/health"))["status"] == "ok"
    expect_ok(c.post("/identify", json={"audio": _clips(1)[0]}))


def test_model_switch_during_enrollment(service):
    """Switching the model while an enrollment is embedded never binds the store to a model
    that is not active: one of the two is refused (409), and /identify keeps answering."""
    c, args = service
    clips = _clips(16)
    outcomes = set()
    for i, frac in enumerate((0.3, 0.5, 0.7, 0.2)):
        _clear(c)
        active = expect_ok(c.get("/config"))["model"]["name"]
        other = "alt" if active == "default" else "default"
        t0 = time.monotonic()
        expect_ok(c.post("/speakers", json={"name": "w", "audio": clips}))
        window = time.monotonic() - t0
        _clear(c)
        slow, fast = _race(
            lambda i=i: c.post("/speakers", json={"name": f"e{i}", "audio": clips}),
            lambda other=other: c.post("/config", json={"model": other}),
            frac * window,
        )
        assert slow.status_code in (200, 409) and fast.status_code in (200, 409), (slow, fast)
        assert (slow.status_code, fast.status_code) != (409, 409)
        outcomes.add((slow.status_code, fast.status_code))
        _check_consistent(c, args)
    assert (409, 200) in outcomes, f"no round hit the race window: {outcomes}"
    _clear(c)


def test_health_is_constant_time_in_speakers(service):
    """/health costs the same with 20,000 speakers as with none (the count is kept in a row)."""
    c, args = service
    _clear(c)

    def median_health_s() -> float:
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            h = expect_ok(c.get("/health"))
            times.append(time.perf_counter() - t0)
        return statistics.median(times), h

    empty_s, h = median_health_s()
    assert h["num_speakers"] == 0
    cfg = expect_ok(c.get("/config"))["model"]
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((20000, cfg["embed_dim"])).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    now = time.time()
    with _db(args) as db:  # directly: 20k rows in one transaction (triggers keep the count)
        db.executemany(
            "INSERT INTO speakers VALUES (?, ?, ?, ?, ?, '{}', ?, 1)",
            [
                (f"bulk{i}", f"s{i}", cfg["model_id"], cfg["embed_dim"], now, v.tobytes())
                for i, v in enumerate(vec)
            ],
        )
        db.execute(
            "UPDATE meta SET model_id = ?, embed_dim = ?", (cfg["model_id"], cfg["embed_dim"])
        )
    try:
        full_s, h = median_health_s()
        assert h["num_speakers"] == 20000 and h["status"] == "ok"
        # Before: every /health listed every speaker (~0.5 s at 20k on this machine).
        assert full_s < 2 * empty_s + 0.02, (empty_s, full_s)
    finally:
        with _db(args) as db:
            db.execute("DELETE FROM speakers WHERE id LIKE 'bulk%'")
    assert expect_ok(c.get("/health"))["num_speakers"] == 0


def test_health_reports_a_stopped_model_deployment(service):
    """/health pings the embedding model: a replica that does not answer (SIGSTOP) makes it
    503 unavailable within about health_timeout_s; it is ok again once the replica runs."""
    c, _ = service
    assert expect_ok(c.get("/health"))["status"] == "ok"
    pids = replica_pids(APP, "EmbeddingModel")
    assert len(pids) == 1
    (pid,) = pids
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = c.get("/health")
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unavailable" and r.json()["problems"]
        assert time.monotonic() - t0 < 10
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if c.get("/health").status_code == 200:
            break
        time.sleep(0.5)
    assert expect_ok(c.get("/health"))["status"] == "ok"


def test_config_survives_restart_and_user_config_applies_without_one(service):
    """POST /config (model and threshold) is stored with the enrollments: a new ingress replica
    restores it, and its unchanged user_config does not undo it. Threshold and top_k are the
    ingress's Serve user_config: a deploy that changes only it reaches the same replica process
    (reconfigure), and the newest change wins over POST /config and the other way round."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    c, args = service
    _clear(c)
    cfg = expect_ok(c.post("/config", json={"model": "alt", "threshold": 0.37}))
    assert cfg["model"]["name"] == "alt"
    expect_ok(c.post("/speakers", json={"name": "kept", "audio": _clips(2)}))
    before = replica_pids(APP, "VoxrayService")

    def deploy(user_config: dict) -> None:
        """What ``serve deploy`` sends: the config, with the ingress's user_config."""
        schema = ServeDeploySchema.model_validate(
            {
                "applications": [
                    {
                        "name": APP,
                        "route_prefix": "/",
                        "import_path": "serve.app:build_app",
                        "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}},
                        "args": args,
                        "deployments": [{"name": "VoxrayService", "user_config": user_config}],
                    }
                ]
            }
        )
        _get_global_client().deploy_apps(schema, _blocking=True)

    def wait_config(threshold: float, top_k: int) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = c.get("/config")
            if r.status_code == 200 and (r.json()["threshold"], r.json()["top_k"]) == (
                threshold,
                top_k,
            ):
                return r.json()
            time.sleep(0.3)
        raise AssertionError(f"config never became {threshold}, {top_k}: {c.get('/config').text}")

    # A restart (the declarative deploy starts a new replica) with the user_config build_app
    # set before (threshold None, top_k 5): the stored POST /config stays.
    serve.delete(APP)
    deploy({"threshold": None, "top_k": 5})
    (pid,) = replica_pids(APP, "VoxrayService")
    assert pid not in before
    cfg = wait_config(0.37, 5)
    assert cfg["model"]["name"] == "alt"
    h = expect_ok(c.get("/health"))
    assert h["status"] == "ok" and h["num_speakers"] == 1 and h["model"] == "alt"
    assert expect_ok(c.post("/identify", json={"audio": _clips(1)[0]}))["threshold"] == 0.37
    # A changed user_config: applied by reconfigure() in the same process.
    deploy({"threshold": 0.62, "top_k": 4})
    wait_config(0.62, 4)
    assert replica_pids(APP, "VoxrayService") == {pid}
    expect_ok(c.post("/config", json={"threshold": 0.44}))
    with _db(args) as db:
        stored = dict(db.execute("SELECT key, value FROM settings").fetchall())
    assert json.loads(stored["user_config"]) == {"threshold": 0.62, "top_k": 4}
    assert json.loads(stored["threshold"]) == 0.44 and json.loads(stored["model"]) == "alt"

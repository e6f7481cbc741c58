"""Fault: ``kill -9`` of the ingress replica during a stream of enrollments.

Four clients enroll speakers (unique names) without pause; the ingress replica's process is
killed with SIGKILL mid-stream and Serve starts a new one. Afterwards the database file passes
``PRAGMA integrity_check``, every enrollment that was answered 200 is there (WAL with
``synchronous=FULL``: a commit is on disk before the answer), and no enrollment is stored twice.
Requests in flight at the kill may fail (and may or may not have committed): those are not
acknowledged, so either outcome is allowed for them, but never a duplicate.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from tests.serve.helpers import (
    KEYS,
    app_args,
    b64,
    expect_ok,
    noise_wav,
    replica_pids,
    running_app,
)

pytestmark = pytest.mark.ray

AUTH = {"Authorization": f"Bearer {KEYS['enroll']}"}
APP = "speaker_kill9"


def test_kill9_of_ingress_keeps_acknowledged_enrollments(ray_cluster, tmp_path):
    import models

    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "a.pt")
    args = app_args(ckpt, tmp_path)
    clip = b64(noise_wav(1.0))
    acked: dict[str, str] = {}  # name -> id, answered 200
    failed: list[str] = []  # what the clients saw while the replica was down
    lock = threading.Lock()
    stop = threading.Event()
    killed = threading.Event()
    after_kill = [0]

    with running_app(args, APP, timeout=30) as c:
        base_url = str(c.base_url)
        (pid,) = replica_pids(APP, "VoxrayService")

        def client(k: int) -> None:
            with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as hc:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    name = f"c{k}-{i:05d}"
                    try:
                        r = hc.post("/speakers", json={"name": name, "audio": [clip]})
                    except httpx.HTTPError as exc:
                        with lock:
                            failed.append(type(exc).__name__)
                        time.sleep(0.1)
                        continue
                    with lock:
                        if r.status_code == 200:
                            acked[name] = r.json()["id"]
                            after_kill[0] += killed.is_set()
                        else:
                            failed.append(str(r.status_code))
                            time.sleep(0.1)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while len(acked) < 10 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(acked) >= 10, "the enrollment stream did not start"
            os.kill(pid, signal.SIGKILL)
            killed.set()
            deadline = time.monotonic() + 120  # Serve notices, starts a replica, clients resume
            while after_kill[0] < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert after_kill[0] >= 10, f"no enrollment answered after the kill: {failed[-5:]}"
        new = replica_pids(APP, "VoxrayService")
        assert new and pid not in new
        h = expect_ok(c.get("/health"))
        assert h["status"] == "ok"

    with sqlite3.connect(args["db"]) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = db.execute("SELECT id, name, num_embeddings FROM speakers").fetchall()
        (counted,) = db.execute("SELECT num_speakers FROM stats").fetchone()
        (embeddings,) = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
    stored = {sid: name for sid, name, _ in rows}
    names = [name for _, name, _ in rows]
    assert len(names) == len(set(names)), "an enrollment is stored twice"
    missing = {n for n, sid in acked.items() if stored.get(sid) != n}
    assert not missing, f"acknowledged enrollments lost: {sorted(missing)[:5]}"
    assert counted == len(rows) and embeddings == len(rows)
    assert all(n == 1 for _, _, n in rows)
    assert h["num_speakers"] == len(rows)

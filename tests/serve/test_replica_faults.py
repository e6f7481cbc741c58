"""Faults at replica scale: with two embedding replicas, ``kill -9`` of one replica's process
during a bounded load run fails no client request.

Requests still queued in the ingress's handle are re-routed by Serve; those in flight on the
killed replica fail with ``ActorDiedError`` and are sent again by ``EmbeddingClient`` (bounded
retries, ``serve/context.py``). The replica's pid comes from Ray's state API, as an operator
would find it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import models
from tests.serve.helpers import KEYS, app_args, b64, free_port, noise_wav, state_address

pytestmark = pytest.mark.ray

APP = "faults"
DEPLOYMENT = "EmbeddingModel"
REQUESTS = 80  # bounded load: every request gets an answer or a timeout
CONCURRENCY = 8


def _replica_pids() -> list[int]:
    """The pids of the live embedding replicas (Serve names their actor class
    ``ServeReplica:<app>:<deployment>``)."""
    from ray.util.state import list_actors

    actors = list_actors(
        address=state_address(),
        filters=[("class_name", "=", f"ServeReplica:{APP}:{DEPLOYMENT}"), ("state", "=", "ALIVE")],
    )
    return sorted(int(a.pid) for a in actors)


def _wait_running(n: int, timeout_s: float = 180.0) -> list[int]:
    """Block until ``n`` embedding replicas run (Serve's status and Ray's actor list agree)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dep = serve.status().applications[APP].deployments[DEPLOYMENT]
        pids = _replica_pids()
        if dep.replica_states.get("RUNNING", 0) == n and len(pids) == n:
            return pids
        time.sleep(0.5)
    raise TimeoutError(f"{n} {DEPLOYMENT} replicas not running after {timeout_s:g} s")


def test_killing_a_replica_mid_load_fails_no_request(ray_cluster, tmp_path):
    from ray import serve

    from serve.app import build_app

    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "m.pt")
    args = app_args(
        ckpt,
        tmp_path,
        autoscaling={"min_replicas": 2, "max_replicas": 2},
        diarization={"enabled": False},
        max_batch_size=4,
    )
    clips = [b64(noise_wav(2.0, seed=i)) for i in range(4)]
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP, route_prefix="/")
    try:
        pids = _wait_running(2)
        assert os.getpid() not in pids
        done = threading.Event()
        answered: list[int] = []
        auth = {"Authorization": f"Bearer {KEYS['read']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=60) as client:

            def one(i: int) -> int:
                r = client.post("/extract_embedding", json={"audio": clips[i % len(clips)]})
                answered.append(r.status_code)
                if len(answered) >= 20:
                    done.set()
                return r.status_code

            with ThreadPoolExecutor(CONCURRENCY) as pool:
                futures = [pool.submit(one, i) for i in range(REQUESTS)]
                assert done.wait(180), "the load run did not get going"
                victim = pids[0]
                os.kill(victim, signal.SIGKILL)  # mid-run: 60 requests still to go
                killed_after = len(answered)
                codes = [f.result(timeout=240) for f in futures]
        assert killed_after < REQUESTS  # the kill landed during the load run
        assert codes == [200] * REQUESTS, {c: codes.count(c) for c in set(codes)}
        assert victim not in _replica_pids()
        # Serve replaces the dead replica (a new process), so capacity comes back.
        new = _wait_running(2)
        assert victim not in new
    finally:
        serve.delete(APP)
        serve.shutdown()

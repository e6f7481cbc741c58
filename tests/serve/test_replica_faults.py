"""Faults at replica scale: with two embedding replicas, ``kill -9`` of one replica's process
during a bounded load run fails no client request: neither the embedding requests nor the
diarization requests running beside them, whose windows the diarization replica sends to the
same embedding replicas.

Calls the killed replica held are re-sent to the live one: by Serve's router (in Ray 2.60 the
callers' logs show the dead replica dropped from routing and no retry of ours firing), else by
the callers' own bounded retries (``EmbeddingClient`` in ``serve/context.py``,
``HandleEmbedder`` in ``serve/deployments/diarize.py``). The replica's pid comes from Ray's
state API, as an operator would find it.
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
from tests.conversations import conversation_wav
from tests.serve.helpers import (
    KEYS,
    PRODUCT,
    app_args,
    b64,
    free_port,
    noise_wav,
    state_address,
)

pytestmark = pytest.mark.ray

APP = "faults"
DEPLOYMENT = "EmbeddingModel"
PER_CLIENT_MAX = 200  # requests per client thread, at most (each loop stops earlier)
CONCURRENCY = 8
DIARIZERS = 3  # client threads sending /diarize beside the embedding load


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
        diarization={"max_seconds": 20.0, **PRODUCT},
        max_request_mb=4.0,
        max_batch_size=4,
    )
    clips = [b64(noise_wav(2.0, seed=i)) for i in range(4)]
    meeting = b64(conversation_wav(0))  # 14 s of turns: tens of windows per /diarize
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=APP, route_prefix="/")
    try:
        pids = _wait_running(2)
        assert os.getpid() not in pids
        answered: list[int] = []  # status codes of /extract_embedding, in answer order
        diarized: list[int] = []  # ... and of /diarize
        stop = threading.Event()
        auth = {"Authorization": f"Bearer {KEYS['read']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=120) as client:

            def embed_loop(k: int) -> None:
                for i in range(PER_CLIENT_MAX):  # bounded, and stopped once the check is done
                    if stop.is_set():
                        return
                    r = client.post("/extract_embedding", json={"audio": clips[(k + i) % 4]})
                    answered.append(r.status_code)

            def diarize_loop() -> None:
                for _ in range(PER_CLIENT_MAX):
                    if stop.is_set():
                        return
                    diarized.append(client.post("/diarize", json={"audio": meeting}).status_code)

            def wait_for(what: str, cond, timeout_s: float = 180.0) -> None:
                deadline = time.monotonic() + timeout_s
                while not cond():
                    assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
                    time.sleep(0.1)

            with ThreadPoolExecutor(CONCURRENCY + DIARIZERS) as pool:
                loops = [pool.submit(embed_loop, k) for k in range(CONCURRENCY)]
                loops += [pool.submit(diarize_loop) for _ in range(DIARIZERS)]
                try:
                    # both kinds of traffic flowing (diarization warm): many windows in flight
                    wait_for("20 embeddings and a diarization", lambda: len(answered) >= 20
                             and len(diarized) >= 1)  # fmt: skip
                    victim = pids[0]
                    os.kill(victim, signal.SIGKILL)
                    after, d_after = len(answered), len(diarized)
                    # the load goes on past the death: 40 more embeddings, 3 more diarizations
                    wait_for("traffic after the kill", lambda: len(answered) >= after + 40
                             and len(diarized) >= d_after + DIARIZERS)  # fmt: skip
                finally:
                    stop.set()
                    for f in loops:
                        f.result(timeout=240)
        assert answered and set(answered) == {200}, {c: answered.count(c) for c in set(answered)}
        assert diarized and set(diarized) == {200}, diarized
        assert victim not in _replica_pids()
        # Serve replaces the dead replica (a new process), so capacity comes back.
        new = _wait_running(2)
        assert victim not in new
    finally:
        serve.delete(APP)
        serve.shutdown()

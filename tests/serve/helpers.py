"""Shared by the Serve test modules: a real app on a free loopback port, its arguments, request
bodies, and the checks of an answer.

Auth lives here, in one place: every app these helpers configure reads ``<root>/keys.json``
with one key per scope (``KEYS``), and :func:`http_client` sends the admin key unless told
otherwise."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from serve.auth import hash_key, new_key

ONE_REPLICA = {"min_replicas": 1, "max_replicas": 1}
# One key per scope for this test session (only their hashes are written to keys.json).
KEYS = {scope: new_key() for scope in ("read", "enroll", "admin")}
PRODUCT = {"num_cpus": 0, "autoscaling": ONE_REPLICA}  # an optional product deployment's settings


def state_address() -> str:
    """The GCS address of the Ray cluster this process is connected to, for Ray's state API
    (``list_actors``, ``get_log``). Without it the state API auto-detects a cluster and refuses
    when this machine runs more than one (another test's head, a user's ``ray start``)."""
    import ray

    return ray.get_runtime_context().gcs_address


def app_args(checkpoint: str | Path, root: Path, **overrides: Any) -> dict[str, Any]:
    """``build_app`` arguments for the 2-CPU test cluster: one replica of each deployment at
    ``num_cpus=0``, enrollments in ``<root>/speakers.db``, 0.5-5 s clips, 1 MB bodies;
    ``overrides`` add products (``PRODUCT`` settings) or change the limits. Writes the key file
    (``KEYS``) beside the database."""
    return {
        "api_keys_file": str(write_keys(root)),
        "checkpoint": str(checkpoint),
        "db": str(root / "speakers.db"),
        "min_seconds": 0.5,
        "max_seconds": 5.0,
        "max_request_mb": 1.0,
        "autoscaling": ONE_REPLICA,
        "model_num_cpus": 0,
        "ingress_num_cpus": 0,
        **overrides,
    }


def write_keys(root: Path) -> Path:
    """``<root>/keys.json`` holding the hashes of ``KEYS``, each key named after its scope."""
    from serve.keys import write_key_file

    path = root / "keys.json"
    records = {s: {"hash": hash_key(k), "scopes": [s]} for s, k in KEYS.items()}
    write_key_file(path, records)
    return path


def http_client(port: int, key: str | None = KEYS["admin"], timeout: float = 60) -> httpx.Client:
    """A client of the app on loopback ``port`` sending ``Authorization: Bearer <key>``
    (``key=None``: no header)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout, headers=headers)


def expect_ok(r: httpx.Response) -> dict:
    """The JSON body of a 200 answer."""
    assert r.status_code == 200, r.text
    return r.json()


def expect_error(r: httpx.Response, status: int, code: str | None = None) -> str:
    """A refused request: ``status``, the ``{"error": {"code", "message"}}`` body (with ``code``
    when given); returns the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_wav(seconds: float, sr: int = 16000, seed: int = 0) -> bytes:
    """WAV bytes of low-level Gaussian noise (for routes where the content does not matter)."""
    x = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


@contextlib.contextmanager
def running_app(args: dict[str, Any], name: str, timeout: float = 60) -> Iterator[httpx.Client]:
    """``serve.app.build_app(args)`` on a free loopback port; a client for it; torn down after."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name=name, route_prefix="/")
    try:
        with http_client(port, timeout=timeout) as c:
            yield c
    finally:
        serve.delete(name)
        serve.shutdown()


def replica_pids(app: str, deployment: str) -> set[int]:
    """Process ids of the live replicas of ``deployment`` in Serve application ``app``."""
    import os

    import ray

    pids = set()
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["namespace"] == "serve" and f"::{app}#{deployment}#" in actor["name"]:
            handle = ray.get_actor(actor["name"], namespace="serve")
            try:
                pids.add(ray.get(handle.__ray_call__.remote(lambda _: os.getpid()), timeout=30))
            except ray.exceptions.RayError:  # died between the listing and the call
                continue
    return pids

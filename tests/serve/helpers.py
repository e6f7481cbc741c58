"""Shared by the Serve test modules: a real app on a free loopback port, and request bodies."""

from __future__ import annotations

import base64
import contextlib
import io
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import soundfile as sf


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
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as c:
            yield c
    finally:
        serve.delete(name)
        serve.shutdown()

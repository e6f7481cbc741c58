"""Overload: 200 concurrent /verify clients against the real app on loopback.

The queues are bounded (the embedding deployment queues ``model_max_queued_requests`` calls, the
ingress ``max_queued_requests`` requests), so the service answers every request either 200 or
503 with ``Retry-After``; nothing else, no hang. ``/health`` is polled throughout and must keep
answering quickly: the ingress has slots left for it (``max_ongoing_requests`` above the load),
and a busy model counts as alive.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from serve.bench import load_level
from tests.serve.helpers import KEYS, app_args, b64, expect_ok, noise_wav, running_app

pytestmark = pytest.mark.ray

APP = "speaker_load"
CLIENTS = 200


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import models

    root = tmp_path_factory.mktemp("load")
    return root, models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "a.pt")


def test_200_concurrent_verify_clients(ray_cluster, checkpoint):
    root, ckpt = checkpoint
    args = app_args(
        ckpt,
        root,
        max_ongoing_requests=CLIENTS + 16,  # /health always finds a slot
        max_queued_requests=64,
        model_max_queued_requests=16,  # small, so 200 clients overflow it: 503s
        model_timeout_s=20.0,
        health_timeout_s=2.0,
    )
    clips = [b64(noise_wav(1.0, seed=i)) for i in range(8)]
    AUTH = {"Authorization": f"Bearer {KEYS['read']}"}

    async def verify(client: httpx.AsyncClient, i: int) -> httpx.Response:
        a, b = clips[i % len(clips)], clips[(i + 1) % len(clips)]
        return await client.post("/verify", json={"audio_a": a, "audio_b": b})

    with running_app(args, APP, timeout=60) as c:
        expect_ok(c.post("/verify", json={"audio_a": clips[0], "audio_b": clips[1]}))  # warm
        base_url = str(c.base_url).rstrip("/")
        health: list[tuple[int, float, float]] = []  # (status, seconds, when it was sent)
        load_done: list[float] = []

        async def poll_health(stop: asyncio.Event) -> None:
            async with httpx.AsyncClient(base_url=base_url, timeout=30) as hc:  # /health: open
                while not stop.is_set():
                    t0 = time.perf_counter()
                    r = await hc.get("/health")
                    health.append((r.status_code, time.perf_counter() - t0, t0))
                    await asyncio.sleep(0.2)

        async def run() -> dict:
            stop = asyncio.Event()
            poller = asyncio.create_task(poll_health(stop))
            try:
                # one request per client, all CLIENTS in flight at once
                level = await asyncio.wait_for(
                    load_level(base_url, verify, CLIENTS, CLIENTS, timeout_s=60, headers=AUTH), 120
                )
                load_done.append(time.perf_counter())
                return level
            finally:
                stop.set()
                await asyncio.wait_for(poller, 35)

        level = asyncio.run(run())
        assert set(level["errors"]) <= {"503"}, level  # 503 always with Retry-After
        assert level["ok"] + level["errors"].get("503", 0) == CLIENTS
        assert level["ok"] > 0
        assert level["p99_ms"] < 30_000, level  # bounded: what is not refused is served
        # /health was asked while the 200 clients were in flight (the level may last only a few
        # seconds: most of the excess is refused fast), and every answer was a quick 200
        assert health and health[0][2] < load_done[0], (health, load_done)
        assert all(code == 200 for code, _, _ in health), health
        assert max(t for _, t, _ in health) < 5.0, health
        assert expect_ok(c.get("/health"))["status"] == "ok"

"""Load generator for the speaker service: requests/s and latency of /verify and /identify.

``benchmark_service`` starts the app on loopback (a temporary enrollment database, removed
afterwards), enrolls ``num_enrolled`` random-embedding speakers through ``POST /galleries``, and
sends a fixed number of requests per concurrency level (asyncio + httpx, per-request timeouts),
so the run is bounded. In the same run it times the model alone (``SpeakerEmbedder.embed_batch``
on the same clips, batch 16): ``service_overhead`` is the model's clips/s over the service's
clips/s for /verify (2 clips per request), i.e. how much slower the HTTP path is than the bare
model. It returns a dict and writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

APP_NAME = "speaker_bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clips(n: int, seconds: float, sr: int = 16000, seed: int = 0) -> list[bytes]:
    from datasets.synth import sample_voice, synthesize_utterance

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        wav = synthesize_utterance(sample_voice(rng), seconds, sr, rng)
        buf = io.BytesIO()
        sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
        out.append(buf.getvalue())
    return out


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def _level(
    base_url: str,
    make_request: Any,
    concurrency: int,
    num_requests: int,
    timeout_s: float,
) -> dict[str, Any]:
    """``num_requests`` requests, at most ``concurrency`` in flight."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await make_request(client, i)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(num_requests)))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "requests": num_requests,
        "ok": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else float("nan"),
        "p50_ms": round(1000 * _percentile(latencies, 50), 1),
        "p99_ms": round(1000 * _percentile(latencies, 99), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else float("nan"),
    }


def _model_throughput(checkpoint: str, clips: list[bytes], batch: int, min_clips: int) -> dict:
    """The bare model on the same clips: decode once, then time ``embed_batch`` only."""
    import torch

    from datasets.audio import decode_audio
    from models.pipelines.speaker import SpeakerEmbedder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one embedding replica uses (torch_threads=1)
    try:
        emb = SpeakerEmbedder.from_checkpoint(checkpoint)
        wavs = [decode_audio(c, emb.sample_rate)[0] for c in clips]
        emb.embed_batch(wavs[:batch], emb.sample_rate)  # warm-up
        done, t0 = 0, time.perf_counter()
        while done < min_clips:
            chunk = [wavs[(done + i) % len(wavs)] for i in range(batch)]
            emb.embed_batch(chunk, emb.sample_rate)
            done += batch
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)  # the caller's (e.g. make bench's) setting
    return {"batch_size": batch, "clips": done, "clips_per_s": round(done / wall, 2)}


def benchmark_service(
    checkpoint: str | Path,
    *,
    concurrency: tuple[int, ...] = (1, 8, 32),
    requests_per_level: int = 64,
    clip_seconds: float = 3.0,
    num_enrolled: int = 1000,
    num_clips: int = 16,
    timeout_s: float = 60.0,
    app_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Serve ``checkpoint`` on loopback and measure /verify and /identify per concurrency level.

    Returns ``{"config", "model", "verify": [level...], "identify": [level...], "model_only",
    "service_overhead"}``; each level has requests/s, p50/p99/mean latency (ms) and error counts.
    ``app_args`` override the app's ``AppArgs`` (e.g. ``autoscaling``, ``model_num_cpus``).
    Uses the connected Ray cluster, or starts a local one.
    """
    import httpx
    import ray
    from ray import serve

    from datasets.ray_data import init_ray
    from serve.app import build_app

    checkpoint = str(checkpoint)
    clips = _clips(num_clips, clip_seconds)
    b64 = [base64.b64encode(c).decode() for c in clips]
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="voxray-bench-") as tmp:
        args = {
            "checkpoint": checkpoint,
            "db": str(Path(tmp) / "bench.db"),
            "max_seconds": max(60.0, clip_seconds + 1),
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "ingress_num_cpus": 0,
            "model_num_cpus": 0,
            **(app_args or {}),
        }
        app = build_app(args)
        if not ray.is_initialized():
            init_ray()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        base_url = f"http://127.0.0.1:{port}"
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
            with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
                cfg = client.get("/config").raise_for_status().json()
                dim = int(cfg["model"]["embed_dim"])
                rng = np.random.default_rng(0)
                gallery = rng.standard_normal((num_enrolled, dim)).astype(np.float32)
                t0 = time.perf_counter()
                client.post(
                    "/galleries",
                    json={
                        "group": "bench",
                        "labels": [f"spk{i:05d}" for i in range(num_enrolled)],
                        "embeddings": gallery.tolist(),
                    },
                ).raise_for_status()
                enroll_s = time.perf_counter() - t0

            async def verify(client: httpx.AsyncClient, i: int) -> httpx.Response:
                a, b = b64[i % len(b64)], b64[(i + 1) % len(b64)]
                return await client.post("/verify", json={"audio_a": a, "audio_b": b})

            async def identify(client: httpx.AsyncClient, i: int) -> httpx.Response:
                return await client.post("/identify", json={"audio": b64[i % len(b64)]})

            results: dict[str, list[dict[str, Any]]] = {"verify": [], "identify": []}
            for name, fn in (("verify", verify), ("identify", identify)):
                asyncio.run(_level(base_url, fn, 1, 2, timeout_s))  # warm-up
                for c in concurrency:
                    results[name].append(
                        asyncio.run(_level(base_url, fn, c, requests_per_level, timeout_s))
                    )
        finally:
            serve.delete(APP_NAME)
            # serve.start ignores http_options when Serve already runs, so never leave ours up.
            serve.shutdown()
    model_only = _model_throughput(
        checkpoint, clips, batch=16, min_clips=max(64, 2 * requests_per_level)
    )
    best_verify = max((lvl["requests_per_s"] for lvl in results["verify"]), default=0.0)
    service_clips = 2 * best_verify
    return {
        "config": {
            "concurrency": list(concurrency),
            "requests_per_level": requests_per_level,
            "clip_seconds": clip_seconds,
            "num_enrolled": num_enrolled,
            "enroll_gallery_s": round(enroll_s, 3),
            "app_args": {k: v for k, v in args.items() if k != "db"},
        },
        "model": cfg["model"],
        "verify": results["verify"],
        "identify": results["identify"],
        "model_only": model_only,
        "service_clips_per_s": round(service_clips, 2),
        # > 1: the bare model embeds this many times more clips/s than /verify delivers.
        "service_overhead": round(model_only["clips_per_s"] / service_clips, 2)
        if service_clips
        else float("nan"),
    }


if __name__ == "__main__":
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ns = p.parse_args()
    res = benchmark_service(
        ns.checkpoint, concurrency=tuple(ns.concurrency), requests_per_level=ns.requests
    )
    json.dump(res, sys.stdout, indent=2)
    sys.stdout.write("\n")

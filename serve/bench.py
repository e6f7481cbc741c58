"""Load generator for the speaker service: requests/s and latency of /verify and /identify.

``benchmark_service`` starts the app on loopback (a temporary enrollment database, removed
afterwards), enrolls ``num_enrolled`` random-embedding speakers through ``POST /galleries``, and
sends a fixed number of requests per concurrency level (asyncio + httpx, per-request timeouts),
so the run is bounded. In the same run it times the model alone (``embed_batch`` of the
backend the service ran, torch or ONNX Runtime, on the same clips, batch 16):
``service_overhead`` is the model's clips/s over the service's clips/s for /verify (2 clips per
request), i.e. how much slower the HTTP path is than the bare model. ``benchmark_replicas``
serves the same model with 1 and 2 embedding replicas side by side and compares their
throughput. They return dicts and write nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import socket
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator
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
        out.append(_wav_bytes(synthesize_utterance(sample_voice(rng), seconds, sr, rng), sr))
    return out


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def load_level(
    base_url: str,
    make_request: Any,
    concurrency: int,
    num_requests: int,
    timeout_s: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``num_requests`` requests, at most ``concurrency`` in flight (``headers`` on each, e.g.
    the API key). ``errors`` counts every
    other answer by status (``"503"``; ``"503 without Retry-After"`` when the overload answer
    lacks the header) or exception name; ``share_503`` is the fraction answered 503."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=timeout_s, limits=limits, headers=headers
    ) as client:

        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await make_request(client, i)
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        key = str(r.status_code)
                        if r.status_code == 503 and "retry-after" not in r.headers:
                            key = "503 without Retry-After"
                        errors[key] = errors.get(key, 0) + 1
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
        "share_503": round(
            sum(n for k, n in errors.items() if k.startswith("503")) / max(num_requests, 1), 4
        ),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 2) if wall > 0 else float("nan"),
        "p50_ms": round(1000 * _percentile(latencies, 50), 1),
        "p99_ms": round(1000 * _percentile(latencies, 99), 1),
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else float("nan"),
    }


def _model_throughput(
    checkpoint: str, clips: list[bytes], batch: int, min_clips: int, backend: str = "torch"
) -> dict:
    """The bare model on the same clips, on ``backend`` (``torch`` or ``onnx``, what a CPU
    replica runs): decode once, then time ``embed_batch`` only."""
    import torch

    from datasets.audio import decode_audio
    from models.pipelines.placement import load_embedder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one embedding replica uses (torch_threads=1)
    try:
        emb = load_embedder(checkpoint, backend, "cpu", threads=1)
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
    return {
        "backend": backend,
        "batch_size": batch,
        "clips": done,
        "clips_per_s": round(done / wall, 2),
    }


@contextlib.contextmanager
def served_app(
    checkpoint: str | Path, app_args: dict[str, Any] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The app (``serve.app.build_app``) for ``checkpoint`` on a free loopback port, with a
    temporary enrollment database, one replica of each deployment at ``num_cpus=0`` (what the
    benchmark's local cluster can place) and ``app_args`` on top -> ``(base URL, the app's
    arguments)``; Serve is shut down afterwards. Uses the connected Ray cluster, or starts a
    local one."""
    import ray
    from ray import serve

    from datasets.ray_data import init_ray
    from serve.app import build_app

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="voxray-bench-") as tmp:
        args = _bench_args(checkpoint, Path(tmp) / "bench.db", app_args)
        app = build_app(args)
        if not ray.is_initialized():
            init_ray()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
            yield f"http://127.0.0.1:{port}", args
        finally:
            serve.delete(APP_NAME)
            # serve.start ignores http_options when Serve already runs, so never leave ours up.
            serve.shutdown()


def _bench_args(
    checkpoint: str | Path, db: Path, app_args: dict[str, Any] | None
) -> dict[str, Any]:
    """The benchmark's ``AppArgs``: one replica of each deployment at ``num_cpus=0``."""
    return {
        "checkpoint": str(checkpoint),
        "db": str(db),
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        "ingress_num_cpus": 0,
        "model_num_cpus": 0,
        # keyless on loopback (serve/auth.py): the clients send no key; checking one costs
        # a SHA-256 of a few bytes per request, nothing next to a model call
        "auth": "disabled",
        **(app_args or {}),
    }


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
    ``app_args`` override the app's ``AppArgs`` (e.g. ``autoscaling``, ``model_num_cpus``,
    ``backend``); the bare model runs on the backend the service reports it ran.
    Uses the connected Ray cluster, or starts a local one.
    """
    import httpx

    checkpoint = str(checkpoint)
    clips = _clips(num_clips, clip_seconds)
    b64 = [base64.b64encode(c).decode() for c in clips]
    overrides = {"max_seconds": max(60.0, clip_seconds + 1), **(app_args or {})}
    with served_app(checkpoint, overrides) as (base_url, args):
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
            asyncio.run(load_level(base_url, fn, 1, 2, timeout_s))  # warm-up
            for c in concurrency:
                results[name].append(
                    asyncio.run(load_level(base_url, fn, c, requests_per_level, timeout_s))
                )
    model_only = _model_throughput(
        checkpoint,
        clips,
        batch=16,
        min_clips=max(64, 2 * requests_per_level),
        backend=cfg["model"]["backend"],
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


def benchmark_replicas(
    checkpoint: str | Path,
    *,
    replicas: tuple[int, ...] = (1, 2),
    repeats: int = 3,
    concurrency: int = 16,
    requests: int = 64,
    clip_seconds: float = 3.0,
    num_clips: int = 16,
    timeout_s: float = 60.0,
    app_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """/verify throughput with each number of embedding replicas in ``replicas``, side by side.

    One app per count runs at once (own name and route prefix ``/r<n>``, fixed
    ``min_replicas = max_replicas = n``, the ingress and diarization shared by none), and each
    repeat measures every app in turn (``requests`` requests at ``concurrency``), so slow drifts
    of the machine's load hit all counts alike. Returns per count the requests/s of every
    repeat and their median, and ``ratio``: each count's median over the first count's.
    """
    import httpx
    import ray
    from ray import serve

    from datasets.ray_data import init_ray
    from serve.app import build_app

    clips = [base64.b64encode(c).decode() for c in _clips(num_clips, clip_seconds)]

    async def verify(client: httpx.AsyncClient, i: int, prefix: str) -> httpx.Response:
        a, b = clips[i % len(clips)], clips[(i + 1) % len(clips)]
        return await client.post(f"{prefix}/verify", json={"audio_a": a, "audio_b": b})

    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    names = {n: f"{APP_NAME}_r{n}" for n in replicas}
    rates: dict[int, list[float]] = {n: [] for n in replicas}
    errors: dict[int, dict[str, int]] = {n: {} for n in replicas}
    with tempfile.TemporaryDirectory(prefix="voxray-bench-") as tmp:
        apps = {}
        for n in replicas:
            overrides = {
                "max_seconds": max(60.0, clip_seconds + 1),
                "diarization": {"enabled": False},
                **(app_args or {}),
                "autoscaling": {"min_replicas": n, "max_replicas": n},
            }
            apps[n] = build_app(_bench_args(checkpoint, Path(tmp) / f"r{n}.db", overrides))
        if not ray.is_initialized():
            init_ray()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            for n, app in apps.items():
                serve.run(app, name=names[n], route_prefix=f"/r{n}")
            for n in replicas:  # warm-up: every replica of every app loads and runs once
                asyncio.run(
                    load_level(
                        base_url, lambda c, i, p=f"/r{n}": verify(c, i, p), n, 2 * n, timeout_s
                    )
                )
            for _ in range(repeats):
                for n in replicas:
                    lvl = asyncio.run(
                        load_level(
                            base_url,
                            lambda c, i, p=f"/r{n}": verify(c, i, p),
                            concurrency,
                            requests,
                            timeout_s,
                        )
                    )
                    rates[n].append(float(lvl["requests_per_s"]))
                    for k, v in lvl["errors"].items():
                        errors[n][k] = errors[n].get(k, 0) + v
        finally:
            for name in names.values():
                serve.delete(name)
            serve.shutdown()
    medians = {n: float(np.median(r)) for n, r in rates.items()}
    first = medians[replicas[0]]
    return {
        "config": {
            "replicas": list(replicas),
            "repeats": repeats,
            "concurrency": concurrency,
            "requests": requests,
            "clip_seconds": clip_seconds,
        },
        "requests_per_s": {n: [round(x, 2) for x in r] for n, r in rates.items()},
        "median_requests_per_s": {n: round(m, 2) for n, m in medians.items()},
        "ratio": {n: round(m / first, 3) if first else float("nan") for n, m in medians.items()},
        "errors": errors,
    }


def _wav_bytes(wav: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def identification_split(
    data_root: str | Path,
    *,
    layout: str = "librispeech",
    num_enrolled: int = 100,
    num_impostors: int = 100,
    enroll_clips: int = 2,
    queries_per_speaker: int = 2,
    segment_seconds: float = 3.0,
    sample_rate: int = 16000,
    seed: int = 0,
    speakers: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Enrollment clips, held-out queries and impostor queries from a labelled tree.

    Each speaker's recordings (``datasets.manifests.scan_source``) are cut into non-overlapping
    ``segment_seconds`` segments (a shorter tail is dropped). A seeded shuffle picks
    ``num_enrolled`` speakers among those with at least ``enroll_clips + 1`` segments: their
    first ``enroll_clips`` segments enroll them, up to ``queries_per_speaker`` of the others are
    queries. ``num_impostors`` other speakers give one query each (their first segment) and are
    never enrolled. ``speakers`` restricts the pool (e.g. the speakers a trained model never
    saw). Returns ``{"enroll": {speaker: [wav...]}, "queries": [(speaker, wav)], "impostors":
    [(speaker, wav)], "unused": {speaker: [wav...]}, "speakers_available"}`` (``unused``: the
    pool's other speakers, e.g. to calibrate on), float32 waveforms at ``sample_rate``. A
    ``ValueError`` when the pool has too few speakers.
    """
    from datasets.audio import load_audio
    from datasets.manifests import scan_source

    if enroll_clips < 1 or queries_per_speaker < 1 or num_enrolled < 1 or num_impostors < 0:
        raise ValueError("enroll_clips, queries_per_speaker and num_enrolled must be >= 1")
    n = int(round(segment_seconds * sample_rate))
    segments: dict[str, list[np.ndarray]] = {}
    pool = set(speakers) if speakers is not None else None
    for u in sorted(scan_source(data_root, layout), key=lambda u: u.key):
        if pool is not None and u.speaker not in pool:
            continue
        wav, _ = load_audio(u.path, target_sr=sample_rate)
        segments.setdefault(u.speaker, []).extend(
            wav[i * n : (i + 1) * n].astype(np.float32) for i in range(len(wav) // n)
        )
    rng = np.random.default_rng(seed)
    found = sorted(segments)
    order = [found[i] for i in rng.permutation(len(found))]
    enrollable = [s for s in order if len(segments[s]) > enroll_clips]
    if len(enrollable) < num_enrolled:
        raise ValueError(
            f"{data_root}: {len(enrollable)} speakers have more than {enroll_clips} "
            f"{segment_seconds:g}-s segments; {num_enrolled} wanted for enrollment"
        )
    enrolled = enrollable[:num_enrolled]
    others = [s for s in order if s not in set(enrolled) and segments[s]]
    if len(others) < num_impostors:
        raise ValueError(
            f"{data_root}: {len(others)} speakers left for impostor queries; {num_impostors} wanted"
        )
    return {
        "enroll": {s: segments[s][:enroll_clips] for s in enrolled},
        "queries": [
            (s, w)
            for s in enrolled
            for w in segments[s][enroll_clips : enroll_clips + queries_per_speaker]
        ],
        "impostors": [(s, segments[s][0]) for s in others[:num_impostors]],
        "unused": {s: segments[s] for s in others[num_impostors:]},
        "speakers_available": len(found),
    }


def benchmark_identification(
    checkpoint: str | Path,
    split: dict[str, Any],
    *,
    sample_rate: int = 16000,
    timeout_s: float = 60.0,
    app_args: dict[str, Any] | None = None,
    operating_points: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Open-set identification through the real service: enroll, then ``POST /identify``.

    Serves ``checkpoint`` (a file or a published model by name) on loopback
    (:func:`served_app`), enrolls each speaker of ``split`` (:func:`identification_split`, its
    waveforms at ``sample_rate``) with one ``POST /speakers`` (enrollment) of its clips (base64 WAV), and sends
    every query to ``/identify`` at the service's own threshold (``GET /health``:
    ``--threshold``, else the model's calibration record, else 0.5). Returns counts and rates:
    ``top1`` (the best-scoring enrolled speaker is the right one, threshold ignored),
    ``identified`` (accepted *and* right: the open-set answer), ``false_reject`` (an enrolled
    speaker's query answered "unknown"), ``false_accept`` (an impostor's query matched to
    someone), and ``health`` (threshold and where it came from). ``operating_points`` (name ->
    threshold, e.g. a calibration record's others) adds ``at_points``: the same rates had the
    service decided at each, from the best scores /identify returned (it accepts the best
    speaker iff its score >= the threshold). Requests are sequential, each with ``timeout_s``.
    """
    import httpx

    def b64(wav: np.ndarray) -> str:
        return base64.b64encode(_wav_bytes(wav, sample_rate)).decode()

    longest = max(len(w) for clips in split["enroll"].values() for w in clips) / sample_rate
    overrides = {
        "max_seconds": max(60.0, longest + 1),
        "diarization": {"enabled": False},  # not measured here: no replica competing for CPUs
        **(app_args or {}),
    }
    with served_app(checkpoint, overrides) as (base_url, _):
        with httpx.Client(base_url=base_url, timeout=timeout_s) as client:
            health = client.get("/health").raise_for_status().json()
            t0 = time.perf_counter()
            ids: dict[str, str] = {}
            for spk, clips in split["enroll"].items():
                r = client.post("/speakers", json={"name": spk, "audio": [b64(w) for w in clips]})
                ids[r.raise_for_status().json()["id"]] = spk
            enroll_s = time.perf_counter() - t0

            def answer(wav: np.ndarray) -> tuple[str | None, str | None, float]:
                """(accepted speaker or None, best enrolled speaker, best score)."""
                matches = client.post("/identify", json={"audio": b64(wav), "top_k": 1})
                matches = matches.raise_for_status().json()["matches"]
                best = next(m for m in matches if m["speaker_id"] is not None)
                accepted = matches[0]["speaker_id"]
                return (ids[accepted] if accepted else None), ids[best["speaker_id"]], best["score"]

            t0 = time.perf_counter()
            top1 = identified = rejected = 0
            genuine: list[tuple[bool, float]] = []  # (best speaker right, its score)
            for spk, wav in split["queries"]:
                accepted, best, score = answer(wav)
                top1 += best == spk
                identified += accepted == spk
                rejected += accepted is None
                genuine.append((best == spk, score))
            false_accepts = 0
            impostor_scores = []
            for _, wav in split["impostors"]:
                accepted, _, score = answer(wav)
                false_accepts += accepted is not None
                impostor_scores.append(score)
            query_s = time.perf_counter() - t0
    nq, ni = len(split["queries"]), len(split["impostors"])
    at_points = {
        name: {
            "threshold": round(float(t), 4),
            "identified": round(sum(ok and sc >= t for ok, sc in genuine) / nq, 4),
            "false_reject": round(sum(sc < t for _, sc in genuine) / nq, 4),
            "false_accept": round(sum(sc >= t for sc in impostor_scores) / ni, 4)
            if ni
            else float("nan"),
        }
        for name, t in (operating_points or {}).items()
    }
    return {
        "checkpoint": str(checkpoint),
        "health": health,
        "config": {
            "speakers_available": split["speakers_available"],
            "enrolled": len(split["enroll"]),
            "enroll_clips": max(len(c) for c in split["enroll"].values()),
            "queries": nq,
            "impostors": ni,
        },
        "top1": round(top1 / nq, 4),
        "identified": round(identified / nq, 4),
        "false_reject": round(rejected / nq, 4),
        "false_accept": round(false_accepts / ni, 4) if ni else float("nan"),
        "counts": {
            "top1": top1,
            "identified": identified,
            "rejected": rejected,
            "false_accepts": false_accepts,
        },
        "impostor_best_score_median": round(float(np.median(impostor_scores)), 4)
        if impostor_scores
        else float("nan"),
        "at_points": at_points,
        "enroll_s": round(enroll_s, 2),
        "identify_s": round(query_s, 2),
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

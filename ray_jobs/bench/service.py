"""BENCHMARKS.md section on the speaker service: requests/s and latency over HTTP.

The only module of ``ray_jobs`` that imports ``serve`` (``serve.bench``, the load generator): the
benchmark report measures the service, so the bench job drives it. The layer contract in
pyproject.toml allows exactly this import and no other from ``ray_jobs`` to ``serve``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ray_jobs.bench.models import fmt, head_rule


def section_service(quick: bool, notes: list[str] | None = None) -> str | None:
    """The speaker service over HTTP: requests/s and latency of /verify and /identify.

    Saves a random-weight ``3dspeaker/campplus_192`` checkpoint (the real model's compute;
    ``campplus-tiny`` with ``quick``) to a temporary folder, serves it on a local Ray cluster
    (``datasets.ray_data.init_ray``) with ``serve.bench.benchmark_service`` (which shuts Serve down
    afterwards) and renders each endpoint and concurrency next to the bare model's batched
    throughput.
    """
    notes = notes if notes is not None else []
    import tempfile

    try:
        from datasets.ray_data import init_ray
        from serve.bench import benchmark_service
    except ImportError as exc:
        notes.append(f"Speaker service: Ray Serve not importable ({exc}).")
        return None
    from models import build_model, save_checkpoint

    preset = "campplus-tiny" if quick else "3dspeaker/campplus_192"
    concurrency = (1, 8, 32)
    per_level = 32 if quick else 128
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="voxray-bench-serve-") as tmp:
        ckpt = save_checkpoint(build_model(preset).eval(), Path(tmp) / "model.pt")
        init_ray()
        res = benchmark_service(
            ckpt, concurrency=concurrency, requests_per_level=per_level, num_enrolled=1000
        )
    cfg, model_only = res["config"], res["model_only"]
    model_rate = float(model_only["clips_per_s"])
    clips_per_request = {"verify": 2, "identify": 1}
    head = (
        "| endpoint | concurrency | requests/s | p50 ms | p99 ms | clips/s "
        "| service / model | ok / sent |"
    )
    lines = [
        "## Speaker service",
        "",
        f"`serve.bench.benchmark_service` on `{preset}` (random weights; model id "
        f"`{res['model']['model_id']}`, {res['model']['embed_dim']}-d), "
        f"{cfg['clip_seconds']:g}-s clips, /identify against {cfg['num_enrolled']} enrolled "
        f"speakers. Bare model (`SpeakerEmbedder.embed_batch`, batch "
        f"{model_only['batch_size']}, 1 thread, fbank included): **{fmt(model_rate)} clips/s**. "
        "`service / model` = the endpoint's clips/s (2 per /verify request, 1 per /identify) "
        "over the bare model's.",
        "",
        head,
        head_rule(head),
    ]
    for endpoint in ("verify", "identify"):
        for lvl in res[endpoint]:
            rate = float(lvl["requests_per_s"])
            clips = clips_per_request[endpoint] * rate
            ratio = clips / model_rate if model_rate > 0 else float("nan")
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(lvl["errors"].items()))
            lines.append(
                f"| /{endpoint} | {lvl['concurrency']} | {fmt(rate)} | {fmt(lvl['p50_ms'])} "
                f"| {fmt(lvl['p99_ms'])} | {fmt(clips)} | {fmt(ratio)} "
                f"| {lvl['ok']} / {lvl['requests']}{f' ({errors})' if errors else ''} |"
            )
    app = cfg["app_args"]
    auto = app.get("autoscaling", {})
    lo, hi = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
    lines += [
        "",
        "How measured: the app (`serve.app:build_app`) runs on loopback on a local Ray cluster on "
        f"this machine: one ingress replica and {lo if lo == hi else f'{lo}-{hi}'} embedding "
        f"replica(s), `torch_threads` "
        f"{app.get('torch_threads', 1)}, `@serve.batch` up to {app.get('max_batch_size', 16)} "
        f"clips / {1000 * app.get('batch_wait_timeout_s', 0.01):g} ms. The client (httpx, "
        f"asyncio, the same machine, so it competes for the CPUs) sends {cfg['requests_per_level']} "
        "JSON requests (base64 WAV, 16 distinct synthetic clips) per concurrency level after "
        "2 warm-up requests; p50/p99 are per-request wall times of the successful requests. The "
        f"gallery (random embeddings, `POST /galleries`) took {fmt(cfg['enroll_gallery_s'])} s to "
        "enroll. The bare model is timed in the same run on the same decoded clips.",
    ]
    return "\n".join(lines)

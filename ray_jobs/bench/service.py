"""BENCHMARKS.md section on the speaker service: requests/s and latency over HTTP.

The only module of ``ray_jobs`` that imports ``serve`` (``serve.bench``, the load generator): the
benchmark report measures the service, so the bench job drives it. The layer contract in
pyproject.toml allows exactly this import and no other from ``ray_jobs`` to ``serve``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ray_jobs.bench.models import fmt, head_rule

BACKENDS = ("torch", "onnx")  # the embedding backends measured side by side


def section_service(quick: bool, notes: list[str] | None = None) -> str | None:
    """The speaker service over HTTP: requests/s and latency of /verify and /identify.

    Saves a random-weight ``3dspeaker/campplus_192`` checkpoint (the real model's compute;
    ``campplus-tiny`` with ``quick``) to a temporary folder, serves it on a local Ray cluster
    (``datasets.ray_data.init_ray``) with ``serve.bench.benchmark_service`` once per embedding
    backend (torch, then ONNX Runtime: what a CPU replica runs by default), each next to the
    bare model's batched throughput on the same backend, then compares 2 embedding replicas
    with 1 (``serve.bench.benchmark_replicas``). Serve is shut down after each.
    """
    notes = notes if notes is not None else []
    import tempfile

    try:
        from datasets.ray_data import init_ray
        from serve.bench import benchmark_replicas, benchmark_service
    except ImportError as exc:
        notes.append(f"Speaker service: Ray Serve not importable ({exc}).")
        return None
    from models import build_model, save_checkpoint

    preset = "campplus-tiny" if quick else "3dspeaker/campplus_192"
    concurrency = (1, 8, 32)
    per_level = 32 if quick else 128
    torch.manual_seed(0)
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="voxray-bench-serve-") as tmp:
        ckpt = save_checkpoint(build_model(preset).eval(), Path(tmp) / "model.pt")
        init_ray()
        for backend in BACKENDS:
            res[backend] = benchmark_service(
                ckpt,
                concurrency=concurrency,
                requests_per_level=per_level,
                num_enrolled=1000,
                app_args={"backend": backend},
            )
        scaling = benchmark_replicas(ckpt, repeats=3, concurrency=16, requests=per_level)
    first = res[BACKENDS[0]]
    cfg = first["config"]
    bare = {b: float(r["model_only"]["clips_per_s"]) for b, r in res.items()}
    clips_per_request = {"verify": 2, "identify": 1}
    head = (
        "| backend | endpoint | concurrency | requests/s | p50 ms | p99 ms | clips/s "
        "| service / model | ok / sent |"
    )
    lines = [
        "## Speaker service",
        "",
        f"`serve.bench.benchmark_service` on `{preset}` (random weights; model id "
        f"`{first['model']['model_id']}`, {first['model']['embed_dim']}-d), "
        f"{cfg['clip_seconds']:g}-s clips, /identify against {cfg['num_enrolled']} enrolled "
        "speakers, once per embedding backend in the same run. Bare model (`embed_batch` of the "
        f"same backend, batch {first['model_only']['batch_size']}, 1 thread, fbank included): "
        + ", ".join(f"{b} **{fmt(bare[b])} clips/s**" for b in BACKENDS)
        + f" (ONNX Runtime / torch: **{fmt(bare['onnx'] / bare['torch'])}x**). "
        "`service / model` = the endpoint's clips/s (2 per /verify request, 1 per /identify) "
        "over the bare model's on the same backend.",
        "",
        head,
        head_rule(head),
    ]
    for backend, r in res.items():
        for endpoint in ("verify", "identify"):
            for lvl in r[endpoint]:
                rate = float(lvl["requests_per_s"])
                clips = clips_per_request[endpoint] * rate
                ratio = clips / bare[backend] if bare[backend] > 0 else float("nan")
                errors = ", ".join(f"{k}: {v}" for k, v in sorted(lvl["errors"].items()))
                lines.append(
                    f"| {r['model']['backend']} | /{endpoint} | {lvl['concurrency']} "
                    f"| {fmt(rate)} | {fmt(lvl['p50_ms'])} | {fmt(lvl['p99_ms'])} | {fmt(clips)} "
                    f"| {fmt(ratio)} | {lvl['ok']} / {lvl['requests']}"
                    f"{f' ({errors})' if errors else ''} |"
                )
    app = cfg["app_args"]
    sc = scaling["config"]
    med = scaling["median_requests_per_s"]
    n1, n2 = sc["replicas"][0], sc["replicas"][-1]
    runs = "; ".join(
        f"{n}: {', '.join(fmt(x) for x in xs)}" for n, xs in scaling["requests_per_s"].items()
    )
    lost = {n: sum(e.values()) for n, e in scaling["errors"].items() if e}
    lines += [
        "",
        "How measured: the app (`serve.app:build_app`) runs on loopback on a local Ray cluster on "
        "this machine: one ingress replica and one embedding replica, `torch_threads` "
        f"{app.get('torch_threads', 1)} (ONNX Runtime: as many intra-op threads), `@serve.batch` "
        f"up to {app.get('max_batch_size', 16)} clips / "
        f"{1000 * app.get('batch_wait_timeout_s', 0.01):g} ms. The client (httpx, asyncio, the "
        f"same machine, so it competes for the CPUs) sends {cfg['requests_per_level']} JSON "
        "requests (base64 WAV, 16 distinct synthetic clips) per concurrency level after 2 "
        "warm-up requests; p50/p99 are per-request wall times of the successful requests. The "
        f"gallery (random embeddings, `POST /galleries`) took {fmt(cfg['enroll_gallery_s'])} s to "
        "enroll. The bare model is timed in the same run on the same decoded clips.",
        "",
        f"**Replicas.** /verify with {n2} embedding replicas runs at "
        f"**{fmt(scaling['ratio'][n2])}x** the requests/s of {n1} "
        f"({fmt(med[n2])} vs {fmt(med[n1])} requests/s, median of {sc['repeats']} repeats of "
        f"{sc['requests']} requests at concurrency {sc['concurrency']}, the default backend "
        f"(ONNX Runtime on these CPU replicas); every repeat: {runs}"
        f"{f'; failed requests {lost}' if lost else ''}). `serve.bench.benchmark_replicas` "
        "keeps both apps up at once and alternates between them in each repeat, so both see "
        f"the same machine. This machine has {os.cpu_count()} cores shared by the client, the "
        "ingress, the model replicas and Ray itself, so a second replica adds compute only as "
        "far as a core is idle: the ratio measures how much of one more core the service turns "
        "into throughput here, not the scaling on a cluster, where each replica brings its own "
        "CPUs (or GPU share) and the ratio approaches the replica count until the ingress "
        "saturates.",
    ]
    return "\n".join(lines)


# --- identification ------------------------------------------------------------------------------

IDENTIFY_MODEL = (
    "pip:resemblyzer"  # the pretrained model every machine has (README "Pretrained GE2E")
)


def _calibrated_copy(checkpoint: str | Path, dev: dict[str, list], tmp: Path) -> tuple[Path, dict]:
    """``checkpoint`` (a file or a name) copied into ``tmp`` and calibrated there with
    ``python -m ray_jobs.evaluate --calibrate`` on ``dev`` (speaker -> 16 kHz waveforms, written
    as a speaker/utt tree): the user's path, without touching the record beside their file or
    cache. -> (the copy, evaluate's JSON result)."""
    import contextlib
    import io
    import json
    import shutil

    from datasets.audio import write_audio
    from models.hub import resolve_checkpoint
    from ray_jobs.evaluate.cli.speaker import main as evaluate_main

    copy = tmp / "model.pt"
    shutil.copyfile(resolve_checkpoint(checkpoint), copy)
    for spk, wavs in dev.items():
        for i, wav in enumerate(wavs):
            write_audio(tmp / "dev" / spk / f"{spk}-s{i:02d}.wav", wav, 16000)
    out = io.StringIO()
    argv = ["--checkpoint", str(copy), "--data-root", str(tmp / "dev"), "--layout"]
    with contextlib.redirect_stdout(out):
        rc = evaluate_main([*argv, "speaker/utt", "--calibrate", "--json"])
    if rc != 0:
        raise RuntimeError(f"ray_jobs.evaluate --calibrate on {checkpoint} failed ({rc})")
    return copy, json.loads(out.getvalue())


def identification_row(
    checkpoint: str | Path,
    root: Path,
    *,
    num_enrolled: int,
    num_impostors: int,
    speakers: list[str] | None = None,
    seed: int = 0,
) -> dict:
    """One row of the identification table: split ``root``'s speakers (``speakers`` only, when
    given) with ``serve.bench.identification_split``, calibrate a copy of ``checkpoint`` on the
    speakers the split leaves unused, then ``serve.bench.benchmark_identification``."""
    import tempfile

    from datasets.ray_data import init_ray
    from serve.bench import benchmark_identification, identification_split

    split = identification_split(
        root,
        num_enrolled=num_enrolled,
        num_impostors=num_impostors,
        speakers=speakers,
        seed=seed,
    )
    if not split["unused"]:
        raise ValueError("no speakers left to calibrate on; enroll or impose fewer")
    with tempfile.TemporaryDirectory(prefix="voxray-bench-identify-") as tmp:
        copy, cal = _calibrated_copy(checkpoint, split["unused"], Path(tmp))
        init_ray()
        points = {
            p: cal[f"{p}_threshold"]
            for p in ("eer", "min_dcf_0.01", "min_dcf_0.05")
            if f"{p}_threshold" in cal
        }
        res = benchmark_identification(copy, split, operating_points=points)
    source = res["health"]["threshold_source"]
    if not source.startswith("calibration"):  # the service must decide at the calibrated point
        raise RuntimeError(f"{checkpoint}: the service's threshold came from {source!r}")
    res["checkpoint"] = str(checkpoint)
    res["calibration"] = {
        "speakers": len(split["unused"]),
        "eer": cal["eer"],
        "eer_threshold": cal["eer_threshold"],
        "num_trials": cal["num_trials"],
    }
    return res


def held_out_speakers(checkpoint: Path) -> list[str] | None:
    """The speakers a training run held out (``val_utterances.csv`` beside its checkpoint,
    written by ``ray_jobs.train``), or None when that file is absent."""
    from datasets.manifests import read_manifest_csv

    path = Path(checkpoint).parent / "val_utterances.csv"
    if not path.is_file():
        return None
    return sorted({u.speaker for u in read_manifest_csv(path)})


def section_identification(
    quick: bool, notes: list[str] | None = None, trained: Path | None = None
) -> str | None:
    """Open-set ``/identify`` over HTTP on real LibriSpeech speakers (``../shared/data``): the
    pretrained GE2E import on the whole pool and, with ``trained`` (a checkpoint beside its
    run's ``val_utterances.csv``), both models on that run's held-out speakers only."""
    notes = notes if notes is not None else []
    from ray_jobs.bench.tse import LIBRISPEECH, SHARED

    root = SHARED / LIBRISPEECH
    if not root.is_dir():
        notes.append(f"Speaker identification: no LibriSpeech under {root}.")
        return None
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        notes.append(f"Speaker identification: Ray Serve not importable ({exc}).")
        return None
    rows: list[tuple[str, str, dict]] = []
    n_enroll, n_imp = (20, 20) if quick else (100, 100)
    rows.append(
        (
            "all",
            IDENTIFY_MODEL,
            identification_row(IDENTIFY_MODEL, root, num_enrolled=n_enroll, num_impostors=n_imp),
        )
    )
    if trained is not None:
        held = held_out_speakers(trained)
        if held is None:
            notes.append(
                f"Speaker identification: {trained} has no val_utterances.csv beside it (its "
                "held-out speakers are unknown), so it was not measured."
            )
        else:
            for ckpt in (IDENTIFY_MODEL, trained):
                r = identification_row(ckpt, root, num_enrolled=20, num_impostors=14, speakers=held)
                rows.append((f"{len(held)} held out of `{trained.name}`'s training", str(ckpt), r))
    head = (
        "| model | speakers | enrolled / queries / impostors | calibration EER (spk) "
        "| threshold | top-1 | identified | false reject | false accept |"
    )
    lines = [
        "## Speaker identification",
        "",
        "`serve.bench.benchmark_identification`: the app on loopback, `POST /speakers` (enrollment) per speaker "
        "(2 clips), then `POST /identify` for each query at the service's own threshold "
        "(`/health`: the model's calibration record). Speakers are LibriSpeech "
        "(`../shared/data`, one recording each) cut into 3-s segments: an enrolled speaker's "
        "first 2 segments enroll it, up to 2 later segments are its queries (the same "
        "recording: a same-session protocol, easier than across sessions); impostors are other "
        "speakers, never enrolled, one segment each. Each model is calibrated first "
        "(`ray_jobs.evaluate --calibrate`, on a copy) on the pool's remaining speakers, "
        "disjoint from both. top-1: the best-scoring enrolled speaker is right (threshold "
        "ignored); identified: accepted and right; false accept: an impostor matched to "
        "anyone.",
        "",
        head,
        head_rule(head),
    ]
    for pool, name, r in rows:
        c, cal = r["config"], r["calibration"]
        lines.append(
            f"| `{name}` | {pool} | {c['enrolled']} / {c['queries']} / {c['impostors']} "
            f"| {100 * cal['eer']:.1f}% ({cal['speakers']}) | {r['health']['threshold']:.3f} "
            f"| {100 * r['top1']:.1f}% | {100 * r['identified']:.1f}% "
            f"| {100 * r['false_reject']:.1f}% | {100 * r['false_accept']:.1f}% |"
        )
    head = "| model | speakers | operating point | threshold | identified | false reject | false accept |"
    lines += [
        "",
        "The same answers at each threshold of the model's calibration record (the service's "
        "`--operating-point`), from the best scores /identify returned: an EER threshold is a "
        "pairwise (verification) operating point, while an impostor is accepted when its best "
        "score over the whole gallery passes it, so open-set false accepts grow with the gallery.",
        "",
        head,
        head_rule(head),
    ]
    for pool, name, r in rows:
        for point, m in r.get("at_points", {}).items():
            lines.append(
                f"| `{name}` | {pool} | {point} | {m['threshold']:.3f} "
                f"| {100 * m['identified']:.1f}% | {100 * m['false_reject']:.1f}% "
                f"| {100 * m['false_accept']:.1f}% |"
            )
    return "\n".join(lines)

"""GPU check, Ray-free: what one GPU does with our training step and extraction pipeline.

For CAM++, ECAPA-TDNN (C=1024), TSE v2 and SoundStream-small (registry presets), under bf16 and
fp16 autocast: training-step throughput (samples/s) through the task's ``train_step`` in the one
training loop (``ray_jobs.train.loop.TrainLoop``: autocast, fp16 ``GradScaler``, optimizer step),
and peak memory (``torch.cuda.max_memory_allocated``); then extraction throughput of the speaker
embedding pipeline (``models.pipelines.speaker.SpeakerEmbedder.embed_batch``: fbank + CAM++).
Each measurement runs warm-up steps, then timed steps until a per-cell time budget is spent, with
``torch.cuda.synchronize()`` around the timed region. ``dry_run`` measures the ``-tiny`` presets
on the CPU for one step each (bf16 only: fp16 autocast needs CUDA), so a fast test keeps this file
working on machines without a GPU. Nothing here imports Ray (the GPU image has none).
"""

from __future__ import annotations

import datetime as dt
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.pipelines.speaker import SpeakerEmbedder
from models.registry import build_model, resolve_task
from ray_jobs.train.experiment import load_experiment
from ray_jobs.train.loop import TrainLoop

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    label: str
    preset: str  # the GPU run's registry preset
    tiny: str  # the dry run's
    task: str
    batch: int
    seconds: float  # of audio per example


TARGETS = (
    Target("CAM++ (192)", "campplus", "campplus-tiny", "speaker", 64, 3.0),
    Target(
        "ECAPA-TDNN C1024", "3dspeaker/ecapa_tdnn_c1024_192", "ecapa_tdnn-tiny", "speaker", 64, 3.0
    ),
    Target("TSE v2 (48 kHz)", "tse-v2", "tse-tiny", "tse", 4, 2.0),
    Target("SoundStream-small", "soundstream-small", "soundstream-tiny", "codec", 16, 1.0),
)
NUM_CLASSES = 5994  # VoxCeleb2-dev speakers: the head size of a real run


@dataclass
class Row:
    label: str
    preset: str
    precision: str
    batch: int
    seconds: float
    samples_per_s: float
    step_ms: float
    peak_mib: float | None
    steps: int


def _batch(target: Target, model: torch.nn.Module, batch: int, seconds: float, device) -> dict:
    g = torch.Generator().manual_seed(0)
    cfg = model.cfg
    if target.task == "speaker":
        frames = int(seconds * 100) - 2  # 10 ms hop, 25 ms window
        return {
            "feats": torch.randn(batch, frames, cfg.feat_dim, generator=g).to(device),
            "label": torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device),
        }
    n = int(seconds * cfg.sample_rate)
    if target.task == "tse":
        return {
            "mix": (0.1 * torch.randn(batch, n, generator=g)).to(device),
            "target": (0.1 * torch.randn(batch, n, generator=g)).to(device),
            "ref": (0.1 * torch.randn(batch, n, generator=g)).to(device),
            "present": torch.ones(batch).to(device),
        }
    return {"wav": (0.1 * torch.randn(batch, n, generator=g)).to(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_row(
    target: Target, precision: str, device: torch.device, *, dry_run: bool, budget_s: float
) -> Row:
    preset = target.tiny if dry_run else target.preset
    batch, seconds = (2, 0.5) if dry_run else (target.batch, target.seconds)
    exp = load_experiment(
        base={"model": {"name": preset}, "task": {"name": target.task}},
        overrides={"train.precision": precision, "train.batch_size": batch},
    )
    model = build_model(exp.model.name, exp.model.config)
    task_cfg = dict(exp.task.config)
    if target.task == "speaker":
        task_cfg["num_classes"] = NUM_CLASSES
    entry, cfg = resolve_task(exp.task.name, task_cfg)
    task = entry.cls(model, cfg).to(device)
    loop = TrainLoop(task, exp, device=device, total_steps=10_000)
    data = _batch(target, model, batch, seconds, device)
    task.train()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        task.on_step(i)
        loop.ctx.step = i
        task.train_step(data, loop.ctx)

    warmup, min_steps = (1, 1) if dry_run else (3, 5)
    for i in range(warmup):
        step(i)
    _sync(device)
    t0, n = time.perf_counter(), 0
    while n < min_steps or (time.perf_counter() - t0 < budget_s and n < 1000):
        step(warmup + n)
        n += 1
        if n >= min_steps:
            _sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Row(
        target.label, preset, precision, batch, seconds, n * batch / elapsed,
        1000 * elapsed / n, peak, n,
    )  # fmt: skip


def extraction_row(precision: str, device: torch.device, *, dry_run: bool, budget_s: float) -> Row:
    """``SpeakerEmbedder.embed_batch`` (fbank on the GPU's host + CAM++ on ``device``) over
    3-s clips, under ``precision`` autocast."""
    preset = "campplus-tiny" if dry_run else "campplus"
    clips, seconds = (4, 1.0) if dry_run else (256, 3.0)
    embedder = SpeakerEmbedder(build_model(preset), device=device)
    rng = np.random.default_rng(0)
    wavs = [
        (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for _ in range(clips)
    ]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with torch.autocast(device_type=device.type, dtype=dtype):
        embedder.embed_batch(wavs[:2], 16000)  # warm-up
        _sync(device)
        t0, n = time.perf_counter(), 0
        while n < 1 or (time.perf_counter() - t0 < budget_s and n < 100):
            emb = embedder.embed_batch(wavs, 16000)
            n += 1
        _sync(device)
    elapsed = time.perf_counter() - t0
    if not np.isfinite(emb).all():
        raise FloatingPointError(f"non-finite embeddings under {precision}")
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Row(
        "extraction: SpeakerEmbedder, CAM++", preset, precision, clips, seconds,
        n * clips / elapsed, 1000 * elapsed / n, peak, n,
    )  # fmt: skip


def run(*, dry_run: bool = False, device: str | None = None, budget_s: float = 20.0) -> list[Row]:
    """Every target x precision, then extraction. ``dry_run``: tiny presets, CPU, bf16."""
    dev = torch.device(device or ("cpu" if dry_run else "cuda"))
    precisions = ("bf16",) if dev.type == "cpu" else ("bf16", "fp16")
    rows = []
    for target in TARGETS:
        for precision in precisions:
            log.info("training step: %s, %s", target.label, precision)
            rows.append(train_row(target, precision, dev, dry_run=dry_run, budget_s=budget_s))
    for precision in precisions:
        log.info("extraction: %s", precision)
        rows.append(extraction_row(precision, dev, dry_run=dry_run, budget_s=budget_s))
    return rows


def markdown(rows: list[Row], device: torch.device, elapsed_s: float) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    lines = [
        "## GPU",
        "",
        f"`make gpu-check` (`python -m ray_jobs.gpu_check`), "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {name or device}, torch "
        f"{torch.__version__}, {elapsed_s / 60:.1f} min. Training: the task's `train_step` in "
        "`TrainLoop` (autocast; fp16 with a GradScaler; optimizer step included), random inputs, "
        f"speaker heads of {NUM_CLASSES} classes. Extraction: `SpeakerEmbedder.embed_batch` "
        "(fbank + model) under autocast. Warm-up steps first, then the mean over the timed "
        "steps (`torch.cuda.synchronize()` around them); peak = `torch.cuda.max_memory_allocated`.",
        "",
        "| what | preset | precision | batch x s | samples/s | ms/step | peak MiB | steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "-"
        lines.append(
            f"| {r.label} | {r.preset} | {r.precision} | {r.batch} x {r.seconds:g} "
            f"| {r.samples_per_s:.3g} | {r.step_ms:.4g} | {peak} | {r.steps} |"
        )
    return "\n".join(lines) + "\n"


def append_section(path: str | Path, text: str) -> Path:
    """Append ``text`` to ``path`` (created if missing), replacing an earlier GPU section."""
    path = Path(path)
    old = path.read_text() if path.is_file() else "# Benchmarks\n"
    head, sep, rest = old.partition("\n## GPU\n")
    if sep:  # drop the previous GPU section, keep what follows it
        nxt = rest.find("\n## ")
        old = head + ("" if nxt < 0 else rest[nxt:])
    path.write_text(old.rstrip("\n") + "\n\n" + text)
    return path

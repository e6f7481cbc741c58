"""Fixtures shared by the ray_jobs test modules."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import models
from datasets.synth import generate_corpus


@pytest.fixture(scope="module")
def synth_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic speaker tree (8 speakers x 6 utterances) for the training tests."""
    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root, num_speakers=8, utts_per_speaker=6, seconds=(1.5, 2.5), seed=3)
    return root


# The extraction corpus's two unreadable files, by utterance key.
EXTRACT_FAILURES = {"synth_spk000_zz_corrupt", "synth_spk001_zz_empty"}


@pytest.fixture(scope="module")
def extract_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(root, checkpoint)``: 4 speakers x 3 synthetic utterances under ``<root>/data`` plus one
    corrupt and one empty file (``EXTRACT_FAILURES``), and a tiny CAM++ ``<root>/model.pt``."""
    root = tmp_path_factory.mktemp("extract")
    generate_corpus(root / "data", num_speakers=4, utts_per_speaker=3, seconds=(0.6, 1.2))
    (root / "data/synth/spk000/zz_corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 4)
    (root / "data/synth/spk001/zz_empty.wav").write_bytes(b"")
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "model.pt")
    return root, ckpt


def _gloo_rank(rank: int, world_size: int, port: int, fn: Callable, args: tuple, out) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        out.put((rank, fn(rank, *args)))
    finally:
        dist.destroy_process_group()


def run_gloo_ranks(fn: Callable, *args: Any, world_size: int = 2, timeout: float = 300) -> list:
    """``fn(rank, *args)`` in ``world_size`` spawned processes that form one gloo process group
    (torch.distributed on CPU, as Ray Train sets it up); their results, by rank. ``fn`` must be
    a module-level function (spawned processes import it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_gloo_rank, args=(r, world_size, port, fn, args, out))
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=timeout) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * world_size
    return [results[r] for r in range(world_size)]


def assert_best_epoch_reported(out: Path, task: str, epochs: int) -> dict:
    """A finished ``ray_jobs.train`` run in ``out``: ``metrics.csv`` has one row per epoch, each
    with the task's sweep metric (what ranks epochs and trials), ``curves.png`` and TensorBoard
    events exist, and ``report.json``/``model.pt`` are the best epoch by that metric. Returns
    the report."""
    from models import read_checkpoint
    from models.registry import resolve_task
    from ray_jobs.train.logbook import pick_best, read_metrics_csv

    metric, mode = resolve_task(task)[0].cls.sweep_metric
    rows = read_metrics_csv(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    assert all(math.isfinite(r[metric]) for r in rows), (metric, rows)
    assert (out / "curves.png").stat().st_size > 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    best = rows[pick_best(rows, metric, mode)]
    report = json.loads((out / "report.json").read_text())
    chosen = report["model_pt"]
    assert chosen["selected_by"] == metric and chosen["epoch"] == best["epoch"]
    assert math.isclose(chosen[metric], best[metric], rel_tol=1e-6, abs_tol=1e-9)
    assert read_checkpoint(out / "model.pt")["meta"]["epoch"] == best["epoch"]
    return report


def train_killing_a_worker(exp: Any, out: str | Path, progress: Path) -> tuple[dict, int]:
    """Run ``run_training(exp, out)`` (``out`` a folder or a URI) in a thread and SIGKILL its
    rank-0 training worker once Ray Train has registered an epoch checkpoint in the run's
    storage and an epoch other than the last is training (``progress``: the worker's progress
    file on this node). Returns ``(report, killed pid)``; fails if no worker could be killed or
    the run did not finish."""
    import os
    import signal
    import threading
    import time

    from datasets import storage
    from ray_jobs.train.job import run_training

    epochs = exp.train.epochs
    snapshot = storage.join(out, "ray_results", exp.name, "checkpoint_manager_snapshot.json")
    result: dict = {}

    def target():
        try:
            result["report"] = run_training(exp, out)
        except BaseException as exc:  # surfaced in the assertion below
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    killed_pid = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and thread.is_alive():
        if progress.is_file() and storage.exists(snapshot):
            info = json.loads(progress.read_text())
            registered = json.loads(storage.read_text(snapshot)).get("latest_checkpoint_result")
            # kill only once Ray Train has registered an epoch checkpoint and work remains
            if registered and 1 <= info["epoch"] < epochs - 1 and info["phase"] == "train":
                killed_pid = info["pid"]
                os.kill(killed_pid, signal.SIGKILL)
                break
        time.sleep(0.2)
    assert killed_pid is not None, "training finished or stalled before the worker could be killed"
    thread.join(timeout=600)
    assert "error" not in result, result.get("error")
    return result["report"], killed_pid

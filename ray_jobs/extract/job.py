"""The Ray adapter of bulk speaker-embedding extraction (``python -m ray_jobs.extract``, whose
CLI is ``ray_jobs/extract/cli.py``): :func:`extract` on Ray Data.

Runs on a local Ray cluster it starts, or unchanged through
``ray job submit --working-dir . -- python -m ray_jobs.extract ...`` (audio, checkpoint and output
paths must then be readable from the cluster's nodes; the checkpoint is read once by the driver
and shipped to the actors). The pipeline, after the shape of Ray's batch-inference examples:

    manifest rows (sorted by duration) -> map_batches(featurize_rows)   CPU tasks: decode,
                                                                       resample, fbank
                                       -> map_batches(EmbedActor)      model actors (GPU with
                                                                       --num-gpus), exact
                                                                       same-length batching
                                       -> driver: parquet parts        resumable

Every step is a function of ``ray_jobs/extract/core.py`` or ``ray_jobs/extract/output.py``
(Ray-free, tested without a cluster); this file only wires them to Ray Data. Outputs, resume
and failure handling: see those modules and ``--help``. Rerunning the same command resumes; a
different checkpoint is refused.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from datasets import storage
from datasets.manifests import Utterance
from datasets.ray_data import init_ray
from models.checkpoint import read_checkpoint
from models.features import FrontEndConfig
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.cli import existing_checkpoint
from ray_jobs.extract.core import (
    Stream,
    embed_rows,
    extract_baseline,
    featurize_rows,
    run_extraction,
)
from ray_jobs.extract.output import (
    PARTS_DIR,
    STATE_FILE,
    Batch,
    ExtractError,
    OutputState,
    open_output,
)
from ray_jobs.storage import check_output
from ray_jobs.submission import run_name

log = logging.getLogger("ray_jobs.extract.job")

__all__ = [
    "EmbedActor",
    "benchmark_extraction",
    "extract",
    "extract_baseline",
    "ray_stream",
]


class EmbedActor:
    """Ray Data callable class: one model per actor, built from a checkpoint dict (no file I/O
    on the worker, so the checkpoint path need not exist on every node)."""

    def __init__(self, checkpoint: dict[str, Any], model_id: str, use_gpu: bool, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.embedder = SpeakerEmbedder.from_checkpoint_dict(
            checkpoint, device=device, model_id=model_id
        )

    def __call__(self, batch: Batch) -> Batch:
        return embed_rows(self.embedder, batch)


def ray_stream(
    checkpoint: dict[str, Any],
    model_id: str,
    fbank: FrontEndConfig,
    *,
    batch_size: int = 32,
    num_gpus: int = 0,
    num_actors: int = 1,
    cpus_per_actor: float = 1.0,
    min_seconds: float = 0.0,
    name: str | None = None,
) -> Stream:
    """A :data:`extract_core.Stream` that runs featurization and embedding on Ray Data; ``name``
    names its dataset on the dashboard."""
    weights = sum(v.numel() * v.element_size() for v in checkpoint["state_dict"].values())
    # Bytes per actor: torch + Ray in the worker (~0.5 GiB measured), weights, batches.
    actor_memory = 4 * weights + 2**30

    def stream(rows: list[dict[str, Any]]) -> Iterator[Batch]:
        init_ray()  # only when there is work: a finished output is re-finalized without Ray
        gpus = ray.cluster_resources().get("GPU", 0)
        if num_gpus > gpus:
            log.warning("--num-gpus %d but the cluster has %s GPUs; actors wait", num_gpus, gpus)
        # Rows arrive sorted by duration; contiguous blocks keep equal lengths together.
        ds = ray.data.from_items(
            rows, override_num_blocks=max(1, math.ceil(len(rows) / batch_size))
        )
        ds.set_name(name)
        ds = ds.map_batches(
            featurize_rows,
            fn_kwargs={"fbank": fbank, "min_seconds": min_seconds},
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=1,  # bad files never raise here: they become error rows
        )
        gpu = num_gpus > 0
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs={
                "checkpoint": checkpoint,
                "model_id": model_id,
                "use_gpu": gpu,
                "threads": max(1, int(cpus_per_actor)),
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_gpus if gpu else num_actors),
            num_gpus=1 if gpu else None,
            num_cpus=cpus_per_actor,
            # Reserve room for the model and a batch. The differing resources also keep Ray Data
            # from fusing the featurize tasks into the actors, so decoding scales on every CPU
            # instead of running only inside the model actors.
            memory=actor_memory,
        )
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")

    return stream


def extract(
    utterances: list[Utterance],
    checkpoint: str | Path,
    output: str | Path,
    *,
    formats: tuple[str, ...] = ("parquet",),
    batch_size: int = 32,
    num_gpus: int = 0,
    num_actors: int = 1,
    cpus_per_actor: float = 1.0,
    part_rows: int = 1024,
) -> dict[str, Any]:
    """Embed ``utterances`` with the checkpoint on the Ray cluster into ``output``; returns the
    summary. Resumes from ``output``'s parts; refuses an ``output`` made by another model."""
    if batch_size < 1:
        raise ExtractError(f"--batch-size must be >= 1, got {batch_size}")
    check_output(output)  # a local folder on a multi-node cluster is refused before any work
    checkpoint = existing_checkpoint(checkpoint)  # a URI (s3://.../model.pt): a cached copy
    remote = str(output).rstrip("/") if storage.is_uri(output) else None
    if remote:  # staged here; parts are uploaded as they are written, results at the end
        output = storage.stage_dir(remote, "extract")
        # a run of this output started on another node (or this one): resume from its parts
        pulled, total = storage.pull_tree(remote, output)
        if total:
            log.info("%s holds %d file(s); %d downloaded into %s", remote, total, pulled, output)
    embedder = SpeakerEmbedder.from_checkpoint(checkpoint)
    ckpt = read_checkpoint(checkpoint)
    state = OutputState(
        model_id=embedder.model_id, embed_dim=embedder.embed_dim, fbank=asdict(embedder.fbank_cfg)
    )
    open_output(output, state)  # refuse a mismatching output before starting Ray
    if remote:  # the output's model binding, before any part
        storage.upload_file(Path(output) / STATE_FILE, storage.join(remote, STATE_FILE))
    stream = ray_stream(
        ckpt, embedder.model_id, embedder.fbank_cfg, batch_size=batch_size, num_gpus=num_gpus,
        num_actors=num_actors, cpus_per_actor=cpus_per_actor,
        name=run_name("extract", Path(output).name or "output"),
    )  # fmt: skip
    summary = run_extraction(
        utterances, output, state, stream, formats=formats, part_rows=part_rows, remote=remote
    )
    if remote:
        names = storage.upload_tree(output, remote, exclude=(PARTS_DIR,))
        log.info("uploaded %d result file(s) of %s to %s", len(names), output, remote)
    return summary


# ---------------------------------------------------------------------------------------------
# Benchmark (wired into `make bench` by ray_jobs/bench/ingest.py)


def benchmark_extraction(
    num_utterances: int = 48,
    *,
    num_speakers: int = 8,
    seconds: tuple[float, float] = (1.0, 3.0),
    model: str = "campplus-tiny",
    batch_size: int = 16,
    repeats: int = 3,
    num_actors: int = 1,
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Utterances/s of the Ray Data job vs the single-process baseline loop on the same files.

    Builds a synthetic tree (``datasets.synth.generate_corpus``) and a ``model`` checkpoint in a
    temp folder, then times ``repeats`` fresh extractions (each into an empty output folder, so
    nothing is resumed) and ``repeats`` baseline loops; reports medians and their ratio. Uses the
    running Ray cluster (or starts a local one); the Ray figure includes pipeline start-up, so
    small corpora understate the steady-state rate.
    """
    import torch

    import models
    from datasets.synth import generate_corpus

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        utts = generate_corpus(
            tmp / "data", num_speakers=num_speakers,
            utts_per_speaker=max(1, math.ceil(num_utterances / num_speakers)), seconds=seconds,
        )[:num_utterances]  # fmt: skip
        torch.manual_seed(0)
        ckpt = models.save_checkpoint(models.build_model(model).eval(), tmp / "model.pt")
        embedder = SpeakerEmbedder.from_checkpoint(ckpt)
        init_ray()
        base, ray_rates = [], []
        for r in range(repeats):
            t0 = time.perf_counter()
            extract_baseline(utts, embedder)
            base.append(len(utts) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            summary = extract(utts, ckpt, tmp / f"out{r}", batch_size=batch_size,
                              num_actors=num_actors)  # fmt: skip
            ray_rates.append(len(utts) / (time.perf_counter() - t0))
            if summary["num_failed"]:
                raise RuntimeError(f"benchmark extraction failed on {summary['num_failed']} files")
    ray_rate, base_rate = statistics.median(ray_rates), statistics.median(base)
    return {
        "utterances": len(utts),
        "audio_seconds": summary["audio_seconds"],
        "model": model,
        "batch_size": batch_size,
        "num_actors": num_actors,
        "num_cpus": int(ray.cluster_resources().get("CPU", 0)),
        "repeats": repeats,
        "ray_utterances_per_s": ray_rate,
        "baseline_utterances_per_s": base_rate,
        "speedup": ray_rate / base_rate,
        "ray_runs": ray_rates,
        "baseline_runs": base,
    }

"""Ray Data pipelines over packed HDF5 shards, and ``init_ray`` (the only Ray file in ``datasets/``).

Ray Data has no HDF5 reader, so a dataset starts from the read tasks of a
:class:`~datasets.shard_order.ReadPlan` (a seeded global shuffle of row blocks of every shard, new
each epoch) and each task reads its rows with h5py inside a ``flat_map`` (the pattern of Ray's
``data_ingest_torch_new.py``:
read + transform as Ray Data operators, consumed by ``TorchTrainer`` workers through
``ray.train.get_dataset_shard``). Every transform is a plain function from
``datasets.speaker_transforms`` that is tested without Ray; this file only wires them up.

Shard paths (and noise/RIR folders) must be readable from every node: a local path on a
single-machine cluster, a shared filesystem or a mounted bucket on a real one.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from datasets.ray_env import REPO_ROOT
from datasets.shard_order import ReadPlan
from datasets.speaker_transforms import CropSpec, FeatureSpec, crop_task, featurize_batch
from datasets.tse_transforms import MixerSpec, mix_rows

log = logging.getLogger(__name__)


_MAX_READ_BLOCKS = 2000  # Ray blocks of task ids: enough parallelism, bounded plan metadata


def _random_crops(
    manifest: str | Path,
    crop: CropSpec,
    epochs: int,
    seed: int,
    num_cpus: float,
    first_epoch: int = 0,
) -> ray.data.Dataset:
    """``{"audio", "label"}`` crops of epochs ``first_epoch .. epochs - 1``, read in one pass.

    Row ``i`` of ``ray.data.range`` is read task ``i % T`` of epoch ``first_epoch + i // T`` of
    the plan (``T`` tasks per epoch), so each epoch is its own seeded global shuffle and the
    stream is deterministic by ``seed``: the trainer takes an epoch's worth of batches at a
    time (``TrainData.single_pass``), and a run resumed at epoch ``e`` reads what it would have.
    """
    if not 0 <= first_epoch < epochs:
        raise ValueError(f"need 0 <= first_epoch < epochs, got {first_epoch} and {epochs}")
    plan = ReadPlan.from_manifest(manifest, seed=seed, repeats=crop.crops_per_utterance)
    total = (epochs - first_epoch) * plan.num_tasks
    ds = ray.data.range(total, override_num_blocks=min(total, _MAX_READ_BLOCKS))
    kwargs = {"spec": crop, "plan": plan, "offset": first_epoch * plan.num_tasks}
    return ds.flat_map(crop_task, fn_kwargs=kwargs, num_cpus=num_cpus)


def speaker_training_dataset(
    manifest: str | Path,
    crop: CropSpec,
    features: FeatureSpec,
    *,
    epochs: int = 1,
    seed: int = 0,
    first_epoch: int = 0,
    num_cpus_per_task: float = 1.0,
    batch_size: int = 32,
) -> ray.data.Dataset:
    """Stream ``{"feats": (T, n_mels) float32, "label": int64}`` rows of epochs
    ``first_epoch .. epochs - 1`` from the packed shards of ``manifest``.

    Each read task reads a random sample of the corpus (``datasets.shard_order``: a global
    shuffle per epoch, seeded by ``(seed, epoch)``), so a batch holds about as many speakers
    as it has rows; random crops, speed perturbation (as new labels) in the read; noise/RIR
    augmentation, fbank and SpecAugment in ``map_batches`` CPU tasks, so feature extraction
    scales on CPU nodes apart from the trainers.
    """
    ds = _random_crops(manifest, crop, epochs, seed, num_cpus_per_task, first_epoch)
    return ds.map_batches(
        featurize_batch,
        fn_kwargs={"spec": features},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus_per_task,
    )


def _audio_to_wav(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    audio = np.asarray(batch["audio"], dtype=np.float32)
    return {"wav": audio if audio.ndim == 2 else np.stack(list(audio))}


def waveform_crops_dataset(
    manifest: str | Path,
    crop: CropSpec,
    *,
    epochs: int = 1,
    seed: int = 0,
    first_epoch: int = 0,
    num_cpus_per_task: float = 1.0,
    batch_size: int = 32,
) -> ray.data.Dataset:
    """Random waveform crops ``{"wav": (T,) float32}`` of ``epochs`` epochs from packed shards
    (codec training), in the order of :func:`speaker_training_dataset`."""
    ds = _random_crops(manifest, crop, epochs, seed, num_cpus_per_task, first_epoch)
    return ds.map_batches(
        _audio_to_wav, batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus_per_task
    )


def tse_training_dataset(
    spec: MixerSpec,
    total_rows: int,
    *,
    num_cpus_per_task: float = 1.0,
    batch_size: int = 8,
    first_row: int = 0,
) -> ray.data.Dataset:
    """``total_rows`` dynamic mixes for a whole run (all epochs: the worker reads it once);
    from row ``first_row`` on when a resumed run continues there.

    ``{"mix": (T,), "target": (T,), "ref": (R,), "present": ()}`` float32 rows, mixed in CPU
    tasks apart from the trainers, so mixing scales with CPU nodes (see BENCHMARKS.md for the
    cores one GPU needs). Row ``i`` is seeded by ``(spec.seed, i)`` at progress ``i / total``.
    """
    rows = total_rows - first_row
    if rows < 1 or first_row < 0:
        raise ValueError(f"no rows from row {first_row} of {total_rows}")
    blocks = max(1, min(rows // max(1, batch_size), 200))
    ds = ray.data.range(rows, override_num_blocks=blocks)
    return ds.map_batches(
        mix_rows,
        fn_kwargs={"spec": spec, "total": total_rows, "first": first_row},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus_per_task,
    )


def clips_dataset(
    rows: list[dict],
    fn,
    *,
    fn_kwargs: dict | None = None,
    num_cpus_per_task: float = 1.0,
    batch_size: int = 32,
    shuffle: bool = True,
) -> ray.data.Dataset:
    """Labelled clips (``{"path", "target"}`` rows) through a Ray-free batch function ``fn``
    (ESC-50: decode, crop, between-class mixing), re-executed every epoch."""
    if not rows:
        raise ValueError("no clips given")
    ds = ray.data.from_items(rows)
    if shuffle:
        ds = ds.random_shuffle()
    return ds.map_batches(
        fn,
        fn_kwargs=fn_kwargs or {},
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=num_cpus_per_task,
    )


def benchmark_throughput(
    manifest: str | Path,
    crop: CropSpec,
    features: FeatureSpec,
    *,
    repeats: int = 3,
) -> dict[str, Any]:
    """Crops/s of the full pipeline (read, crop, augment, fbank) on the running Ray cluster.

    Each pass consumes the whole dataset (size it with the shards and ``crops_per_utterance``):
    breaking out of ``iter_batches`` early makes Ray Data force-cancel in-flight tasks, which in
    Ray 2.60 can race with their replies and abort the driver. Returns the median over
    ``repeats`` passes and the per-CPU figure (divided by the CPUs Ray Data may use).
    """
    num_cpus = int(ray.cluster_resources().get("CPU", 1))
    rates = []
    rows = 0
    for _ in range(repeats):
        ds = speaker_training_dataset(manifest, crop, features)
        t0 = time.perf_counter()
        rows = sum(len(b["label"]) for b in ds.iter_batches(batch_size=64, batch_format="numpy"))
        rates.append(rows / (time.perf_counter() - t0))
    rate = float(np.median(rates))
    return {
        "crops_per_s": rate,
        "crops_per_s_per_cpu": rate / num_cpus,
        "num_cpus": num_cpus,
        "rows": rows,
        "repeats": repeats,
        "crop_seconds": crop.crop_seconds,
        "augment": features.augment is not None,
    }


def init_ray(num_cpus: int | None = None) -> None:
    """Connect to the cluster of a submitted job (``RAY_ADDRESS``) or start a local one.

    Call it after Ray-free preparation (packing uses a process pool, which should not fork a
    driver that already runs Ray's threads). The uv opt-out is set by the entry packages
    (``datasets.ray_env``), before this module's ``import ray``.
    """
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    # A local cluster started from the repository root: workers import models/ datasets/ from it.
    ray.init(
        num_cpus=num_cpus,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
        log_to_driver=True,
    )

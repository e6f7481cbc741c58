"""The Ray adapter of the one training entry point (``python -m ray_jobs.train``, whose CLI is
``ray_jobs/train/cli.py``): :func:`run_training` prepares the data, fits a ``TorchTrainer`` and
evaluates; :func:`run_cross_validation` runs it once per fold.

Runs on the local Ray cluster it starts (the default) or, unchanged, on a cluster through
``ray job submit --working-dir . -- python -m ray_jobs.train ...``. Data is packed to HDF5 shards
(once, resumably), streamed by Ray Data (crops, augmentation, fbank on CPU tasks) into a
``TorchTrainer`` whose workers use GPUs when the cluster has them. A worker that dies is replaced
and training resumes from the last epoch checkpoint (``train.max_failures``). Ray Train keeps
the best epoch checkpoints by the task's validation metric (``Task.sweep_metric``: ``val_eer``,
``val_si_sdri``, ``val_mel_distance``, ``val_acc``); at the end the best one is copied to
``<output>/model.pt`` (``report.json``'s ``model_pt`` says which epoch and its metric) and scored
by the family's evaluation on the held-out data.

A stopped run continues from its latest checkpoint with :func:`open_run` + ``run_training(...,
resume_from=...)`` (``python -m ray_jobs.train --resume RUN``): model, optimizers, schedule
position, RNG states and data position (``ray_jobs/train/resume.py`` has the rules).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer

from datasets import storage
from models.checkpoint import atomic_write, read_checkpoint
from models.config import ConfigError
from models.registry import resolve_task
from ray_jobs.storage import check_inputs, check_output
from ray_jobs.submission import run_name
from ray_jobs.train.data import DATA_INPUTS, build_train_data
from ray_jobs.train.experiment import ExperimentConfig, experiment_from_dict
from ray_jobs.train.logbook import CSV_NAME, CURVES_NAME, TB_DIR, pick_best
from ray_jobs.train.loop import TrainLoop
from ray_jobs.train.resume import (
    EXPERIMENT_FILE,
    RESULTS_DIR,
    record_experiment,
    resume_experiment,
    run_experiment,
    storage_folder,
)
from ray_jobs.train.worker import build_task, scratch_prefix, train_loop_per_worker

log = logging.getLogger("ray_jobs.train.job")


def use_gpu(exp: ExperimentConfig) -> bool:
    if exp.train.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) >= exp.train.num_workers
    return exp.train.use_gpu == "yes"


def latest_checkpoint(folder: str | Path) -> ray.train.Checkpoint | None:
    """The latest checkpoint of a Ray Train run folder (a path or URI), or None."""
    fs, path = storage.resolve(folder)
    try:
        return ray.train.Result.from_path(path, storage_filesystem=fs).checkpoint
    except RuntimeError:  # no such folder, or no checkpoint reported yet
        return None


def run_folder(output: str | Path) -> tuple[str, Path]:
    """``--output`` -> ``(location, local folder)``: a local path is both (absolute); for a URI
    (``s3://bucket/run``) the local folder is where the driver packs data and stages files
    before they are uploaded, and holds a copy of the run's ``experiment.yaml``."""
    if storage.is_local(output):
        path = storage.local_path(output)
        return str(path), path
    location = str(output).rstrip("/")
    work = storage.stage_dir(location, "run")
    remote = storage.join(location, EXPERIMENT_FILE)
    if storage.exists(remote):
        storage.download_file(remote, work / EXPERIMENT_FILE)
    else:  # the stored run is what counts: a copy left by an earlier, deleted run is not
        (work / EXPERIMENT_FILE).unlink(missing_ok=True)
    return location, work


def open_run(
    source: str, overrides: list[str] | None = None, output: str | Path | None = None
) -> tuple[ExperimentConfig, str | Path, ray.train.Checkpoint | None]:
    """What ``--resume SOURCE`` continues: ``(experiment, output folder, checkpoint)``.

    ``source`` is a run folder (an earlier ``--output``, holding ``experiment.yaml``) or the
    Ray Train storage folder of a run (``RUN/ray_results/NAME``, a path or a URI such as
    ``s3://bucket/runs/x/ray_results/NAME``; its checkpoints carry the experiment; ``output``
    is then required). The checkpoint is None for a run stopped before its first one.
    """
    location, work = run_folder(source)
    saved = run_experiment(work)
    if saved is not None:
        exp = resume_experiment(saved, overrides, source)
        ckpt = latest_checkpoint(storage_folder(location, experiment_from_dict(saved)))
        if ckpt is None:
            log.warning("%s has no checkpoint yet: the run starts from its beginning", source)
        return exp, output or location, ckpt
    ckpt = latest_checkpoint(source)
    if ckpt is None:
        raise ConfigError(
            f"--resume {source}: neither a run folder (no experiment.yaml) nor a Ray Train "
            "run with a checkpoint (no checkpoint_manager_snapshot.json)"
        )
    if output is None:
        raise ConfigError(f"--resume {source} (a storage folder) needs --output for the run")
    with ckpt.as_directory() as d:
        saved = read_checkpoint(Path(d) / "model.pt")["meta"]["experiment"]
    return resume_experiment(saved, overrides, source), output, ckpt


def _position(ckpt: ray.train.Checkpoint) -> tuple[int, int]:
    """``(epochs completed, batches of the next one trained)`` of a checkpoint."""
    with ckpt.as_directory() as d:
        ts = read_checkpoint(Path(d) / "model.pt").get("train_state") or {}
    return int(ts.get("epoch", 0)), int(ts.get("epoch_batch", 0))


def _sweep_scratch(run_id: str) -> None:
    """Remove checkpoint scratch folders of this run that workers on this node left behind
    (a killed worker cannot clean up after itself; live workers remove their own)."""
    left = list(Path(tempfile.gettempdir()).glob(scratch_prefix(run_id) + "*"))
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    if left:
        log.warning("removed %d checkpoint scratch folder(s) left by dead workers", len(left))


def run_training(
    exp: ExperimentConfig,
    output: str | Path,
    callbacks: list[Any] | None = None,
    *,
    resume: bool = False,
    resume_from: ray.train.Checkpoint | None = None,
) -> dict[str, Any]:
    """Prepare data, train with Ray Train, copy ``model.pt``, evaluate. Returns the report.

    ``callbacks``: Ray Train run callbacks (``tune.sweep`` passes Tune's report callback, so a
    trial's per-epoch metrics reach its scheduler). ``resume``: ``--resume`` (the experiment
    may differ from the recorded one in ``RESUME_KEYS``); ``resume_from``: the checkpoint it
    continues from (:func:`open_run`). A run whose own storage already holds a checkpoint
    (the same command run again) continues from its latest one; ``output`` holding a run of
    another experiment is refused unless resuming.
    """
    check_output(output)  # a local folder on a multi-node cluster is refused before any work
    location, output = run_folder(output)  # output: the local folder (staging for a URI)
    output.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    record_experiment(output, exp, resuming=resume or resume_from is not None)
    if location != str(output):
        storage.upload_file(output / EXPERIMENT_FILE, storage.join(location, EXPERIMENT_FILE))
    start = latest_checkpoint(storage_folder(location, exp)) or resume_from
    if start is not None and resume_from is None:
        log.info("%s already holds checkpoints of this experiment: continuing it", location)
    # every node reads the shards: on a multi-node cluster they must be shared (before packing)
    check_inputs({k: getattr(exp.data, k) for k in DATA_INPUTS}, exp.data.pack_dir or output)
    data = build_train_data(exp, output)  # Ray-free preparation first, then init_ray()
    if data.task_config:
        exp_dict = exp.to_dict()
        exp_dict["task"]["config"].update(data.task_config)
        exp = experiment_from_dict(exp_dict)
    if exp.train.init_from:  # a head that does not fit fails here, before any worker starts
        task = build_task(exp.to_dict())[1]
        TrainLoop(task, exp, device=torch.device("cpu"), total_steps=1, meta=data.meta).init_from(
            exp.train.init_from
        )
    per_worker = data.rows_per_epoch // max(1, exp.train.num_workers)
    steps_per_epoch = max(1, per_worker // exp.train.batch_size // exp.train.grad_accum)
    log.info(
        "training %s (%s task): %d rows/epoch, ~%d steps/epoch x %d epochs",
        exp.model.name,
        exp.task.name,
        data.rows_per_epoch,
        steps_per_epoch,
        exp.train.epochs,
    )
    metric, mode = resolve_task(exp.task.name)[0].cls.sweep_metric
    if data.val is None:
        if exp.train.early_stop_patience > 0:
            raise ConfigError(
                f"train.early_stop_patience needs the per-epoch {metric}, and this run has no "
                "validation data: set data.val (a held-out tree) or data.val_speakers"
            )
        log.warning("no validation data: %s is not reported and model.pt is the last epoch", metric)
    gpu = use_gpu(exp)
    run_id = hashlib.sha1(location.encode()).hexdigest()[:12]
    results_fs, results_path = storage.resolve(storage.join(location, RESULTS_DIR))
    batches_per_epoch = steps_per_epoch * exp.train.grad_accum
    start_batch = 0  # where the single-pass training data starts, in batches per worker
    if start is not None:
        epoch, epoch_batch = _position(start)
        log.info("resuming %s at epoch %d (+%d batches)", start.path, epoch + 1, epoch_batch)
        rows = (epoch * batches_per_epoch + epoch_batch) * exp.train.batch_size
        rows *= exp.train.num_workers
        if data.start_at is not None and 0 < rows < data.rows_per_epoch * exp.train.epochs:
            data.train = data.start_at(rows)
            start_batch = epoch * batches_per_epoch + epoch_batch
    datasets = {"train": data.train}
    if data.val is not None:
        datasets["val"] = data.val
    for split, ds in datasets.items():  # the dashboard names them after the job and config
        ds.set_name(f"{run_name('train', exp.name)}-{split}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "experiment": exp.to_dict(),
            "total_steps": steps_per_epoch * exp.train.epochs,
            # workers write their logs there; a URI's are staged on each node and uploaded
            "output_dir": location,
            "meta": data.meta,
            "has_val": data.val is not None,
            "val_batch_size": data.val_batch_size,
            "single_pass": data.single_pass,
            "batches_per_epoch": batches_per_epoch,
            "start_batch": start_batch,
            "resume_checkpoint": resume_from,
            "run_id": run_id,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=exp.train.num_workers,
            use_gpu=gpu,
            resources_per_worker={"CPU": exp.train.cpus_per_worker, **exp.train.worker_resources},
            placement_strategy=exp.train.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=exp.name,
            storage_path=results_path,
            storage_filesystem=results_fs,
            failure_config=ray.train.FailureConfig(max_failures=exp.train.max_failures),
            # the best epochs by the task's validation metric (the latest is kept as well)
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=exp.train.num_checkpoints,
                checkpoint_score_attribute=metric if data.val is not None else None,
                checkpoint_score_order=mode,
            ),
            callbacks=callbacks,
        ),
        datasets=datasets,
    )
    try:
        result = trainer.fit()
    finally:
        _sweep_scratch(run_id)
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint (error: {result.error})")
    checkpoint, chosen = best_checkpoint(result, metric, mode)
    with checkpoint.as_directory() as ckpt_dir:
        src = Path(ckpt_dir) / "model.pt"
        atomic_write(output / "model.pt", lambda tmp: shutil.copyfile(src, tmp))
    if location != str(output):
        storage.upload_file(output / "model.pt", storage.join(location, "model.pt"))
    last = dict(result.metrics or {})
    log.info(
        "model.pt is epoch %d of %d (%s = %s)",
        chosen.get("epoch", 0),
        last.get("epoch", 0),
        metric,
        chosen.get(metric),
    )
    report: dict[str, Any] = {
        "model": exp.model.name,
        "task": exp.task.name,
        "checkpoint": storage.join(location, "model.pt"),
        # which epoch model.pt is, and why
        "model_pt": {
            "epoch": int(chosen.get("epoch", 0)),
            "step": int(chosen.get("step", 0)),
            "selected_by": metric if metric in chosen else "last epoch (no validation metric)",
            "mode": mode,
            metric: chosen.get(metric),
        },
        "epochs_run": int(last.get("epoch", 0)),
        "early_stopped": bool(
            exp.train.early_stop_patience > 0
            and last.get("epochs_since_best", 0) >= exp.train.early_stop_patience
            and last.get("epoch", 0) < exp.train.epochs
        ),
        "logs": {
            "metrics_csv": storage.join(location, CSV_NAME),
            "curves_png": storage.join(location, CURVES_NAME),
            "tensorboard": storage.join(location, TB_DIR),
        },
        "train_metrics": last,
        **data.summary,
        "train_seconds": round(time.time() - t0, 1),
        "used_gpu": gpu,
        "num_workers": exp.train.num_workers,
        "resumed_from": start.path if start is not None else "",
    }
    if data.evaluate is not None:
        report["eval"] = data.evaluate(output / "model.pt")
    storage.write_text(
        storage.join(location, "report.json"), json.dumps(report, indent=2, default=float)
    )
    return report


def best_checkpoint(result: Any, metric: str, mode: str) -> tuple[Any, dict[str, Any]]:
    """The checkpoint ``model.pt`` is copied from and its epoch metrics: the best kept one by
    ``metric`` (ties: the earliest epoch); the latest when no kept one reports ``metric``."""
    kept = list(result.best_checkpoints or [])
    best = pick_best([m for _, m in kept], metric, mode)
    if best is None:
        return result.checkpoint, dict(result.metrics or {})
    return kept[best][0], dict(kept[best][1])


def run_cross_validation(
    exp: ExperimentConfig, output: str | Path, folds: list[int] | None = None
) -> dict[str, Any]:
    """k-fold cross-validation of a ``classify`` experiment: one training job per predefined
    fold of the ESC-50-format folder (``<output>/fold<k>``), accuracy per fold and their mean."""
    from datasets.esc50 import read_esc50

    if exp.task.name != "classify":
        raise ConfigError(f"--cv is for the classify task, not {exp.task.name!r}")
    fold_ids = sorted({c.fold for c in read_esc50(exp.data.train)})
    if folds is not None:
        unknown = sorted(set(folds) - set(fold_ids))
        if unknown:
            raise ValueError(f"folds {unknown} are not in {exp.data.train} (folds {fold_ids})")
        fold_ids = sorted(folds)
    if len(fold_ids) < 2:
        raise ValueError(f"{exp.data.train}: cross-validation needs >= 2 folds, found {fold_ids}")
    per_fold: dict[str, Any] = {}
    for k in fold_ids:
        exp_dict = exp.to_dict()
        exp_dict["data"]["val_fold"] = k
        log.info("cross-validation: fold %d of %s", k, fold_ids)
        report = run_training(experiment_from_dict(exp_dict), storage.join(output, f"fold{k}"))
        per_fold[str(k)] = report["eval"]["accuracy"]
    accs = list(per_fold.values())
    summary = {
        "model": exp.model.name,
        "folds": per_fold,
        "mean_accuracy": statistics.fmean(accs),
        "std_accuracy": statistics.pstdev(accs),
    }
    storage.write_text(storage.join(output, "cv.json"), json.dumps(summary, indent=2))
    return summary

"""``python -m tune.sweep``: hyper-parameter sweeps with Ray Tune, reusing the training job.

Training sweeps (loss weights, model sizes, learning rates) run one ``ray_jobs.train`` job per
trial: each trial is a Tune function that calls :func:`ray_jobs.train.run_training` with the
trial's overrides and Ray Train's ``TuneReportCallback``, so every epoch's metrics reach the
scheduler, and ASHA stops weak trials early. Trials are ranked by the task's validation metric
(``Task.sweep_metric``: ``val_eer`` for speakers, ``val_si_sdri`` for TSE, ``val_mel_distance``
for codecs, ``val_acc`` for classifiers) unless ``--metric`` says otherwise; a sweep without
validation data is refused before any trial starts::

    python -m tune.sweep train --config ray_jobs/configs/tse.yaml --space tse \\
        --data-root /data/speech --num-samples 16 --output runs/sweep-tse

Diarization sweeps tune the clustering threshold and window settings on a dev set with
reference RTTMs, retraining nothing (``tune/diarization.py``)::

    python -m tune.sweep diarization --checkpoint runs/ecapa/model.pt --dev dev/wavs \\
        --reference-rttm dev/rttm --num-samples 30 --output runs/sweep-diar

Data is prepared (packed to shards) once in the driver before the trials start; every trial
reads the same shards (``data.pack_dir``). A trial takes ``train.num_workers x
train.cpus_per_worker`` CPUs for its trainers plus one for its data pipeline (Ray Data's
decode/crop/mix tasks ask a CPU each); the sweep runs as many trials at once as the cluster
has room for (at most ``--max-concurrent``) and refuses a cluster too small for one. Results:
``<output>/sweep.json`` (every trial's config and final metrics, and the best one), plus each
trial's ``report.json`` and ``model.pt`` (its best epoch). TensorBoard: ``tensorboard --logdir
<output>/tune`` shows every trial's per-epoch metrics (Tune's own event files),
``--logdir <output>/trials`` their per-step curves.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from datasets import storage
from datasets.ray_data import init_ray
from datasets.ray_env import REPO_ROOT
from models.config import ConfigError
from models.registry import resolve_task
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, run_main, user_error
from ray_jobs.storage import check_output
from ray_jobs.train.data import build_train_data
from ray_jobs.train.experiment import (
    ExperimentConfig,
    experiment_dict,
    experiment_from_dict,
    load_experiment,
)
from ray_jobs.train.job import run_training
from tune.diarization import run_diarization_sweep
from tune.spaces import example_values, load_space
from tune.tuner import fit_sweep

log = logging.getLogger("tune.sweep")


# A trial's CPU budget: the Tune function's sliver (Ray needs a non-empty request; it only
# drives a TorchTrainer), the trainers, and a CPU free for the data pipeline, whose Ray Data
# tasks ask one CPU each (datasets/ray_data.py). Without that free CPU the data stage waits
# forever for a CPU the trainers hold, and the trial never gets a batch.
TRIAL_CPU = 0.01
DATA_CPU = 1.0


def plan_trials(
    exp: ExperimentConfig, cluster_cpus: float, max_concurrent: int
) -> tuple[int, float]:
    """``(trials at once, CPUs per training worker)`` so that every running trial keeps
    ``DATA_CPU`` free for its data; the Tune function's sliver comes out of its trainers'
    share. Raises ``ConfigError`` naming what one trial needs when the cluster lacks it."""
    workers = exp.train.num_workers
    trainers = workers * exp.train.cpus_per_worker
    need = trainers + DATA_CPU
    if need > cluster_cpus + 1e-9:
        raise ConfigError(
            f"a trial needs {need:g} CPUs ({workers} training worker(s) x "
            f"train.cpus_per_worker={exp.train.cpus_per_worker:g}, plus {DATA_CPU:g} for its "
            f"data pipeline) but the cluster has {cluster_cpus:g}: lower "
            "train.cpus_per_worker or train.num_workers, or add CPUs"
        )
    concurrent = max(1, min(max_concurrent, int(cluster_cpus // need + 1e-9)))
    if concurrent < max_concurrent:
        log.warning(
            "running %d trial(s) at once, not %d: each needs %g of the cluster's %g CPUs "
            "(trainers + 1 for its data)",
            concurrent,
            max_concurrent,
            need,
            cluster_cpus,
        )
    return concurrent, exp.train.cpus_per_worker - TRIAL_CPU / workers


def validate_space(base: dict[str, Any], space: dict[str, Any]) -> None:
    """Apply one sample value per key and validate the experiment: typos fail before trials."""
    try:
        load_experiment(base=base, overrides=example_values(space))
    except (ConfigError, KeyError, ValueError) as exc:
        raise ConfigError(f"search space does not fit the config: {exc}") from exc


def train_trial(config: dict[str, Any], *, base: dict[str, Any], root: str) -> None:
    """One Tune trial: the training job with this trial's overrides (a Tune function)."""
    exp = load_experiment(base=base, overrides=config)
    trial_dir = storage.join(root, "trials", tune.get_context().get_trial_name())
    run_training(exp, trial_dir, callbacks=[TuneReportCallback()])


def run_train_sweep(
    base: dict[str, Any],
    space: dict[str, Any],
    output: str | Path,
    *,
    num_samples: int = 8,
    metric: str | None = None,
    mode: str | None = None,
    scheduler: str = "asha",
    grace_period: int = 1,
    max_concurrent: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Sweep ``space`` over the experiment dict ``base``; returns the summary in sweep.json.
    ``output`` is a folder or a URI (``s3://bucket/sweeps/x``): the trials' runs and Tune's
    results go there; the data is packed in a local folder (the output's own, or one named
    after the URI), once per node."""
    check_output(output)  # a local folder on a multi-node cluster is refused before any work
    output = str(output) if storage.is_uri(output) else storage.local_path(output)
    pack_root = storage.stage_dir(output, "sweep")
    base = copy.deepcopy(base)
    base.setdefault("data", {})["pack_dir"] = str(pack_root / "data")
    validate_space(base, space)
    exp = experiment_from_dict(base)
    default_metric, default_mode = resolve_task(exp.task.name)[0].cls.sweep_metric
    metric, mode = metric or default_metric, mode or default_mode
    # Pack once in the driver; the trials find finished shards (packing is resumable).
    data = build_train_data(exp, pack_root / "data")
    if metric.startswith("val_") and data.val is None:
        raise ConfigError(
            f"the sweep ranks trials by {metric}, which needs validation data every epoch: set "
            "data.val (a held-out tree) or data.val_speakers (or pass --metric train_loss)"
        )
    init_ray()
    max_concurrent, per_worker = plan_trials(
        exp, ray.cluster_resources().get("CPU", 0.0), max_concurrent
    )
    base.setdefault("train", {})["cpus_per_worker"] = per_worker
    # max_t one past the last epoch: ASHA then only stops trials at its rungs, and a trial that
    # reaches the end finishes its job (copies model.pt, runs the final evaluation).
    sched = (
        ASHAScheduler(max_t=exp.train.epochs + 1, grace_period=grace_period, reduction_factor=2)
        if scheduler == "asha"
        else FIFOScheduler()
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, base=base, root=str(output)), {"CPU": TRIAL_CPU}
    )
    return fit_sweep(
        trainable,
        space,
        output,
        kind="train",
        label=exp.name,
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        seed=seed,
        scheduler=sched,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tune.sweep", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("train", help="sweep training runs (loss weights, sizes) with ASHA")
    t.add_argument("--config", required=True, help="experiment YAML (ray_jobs/configs/*.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--data-root", help="training data (sets data.train)")
    t.add_argument("--epochs", type=int, help="epochs per trial (ASHA's max_t)")
    t.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    t.add_argument("--grace-period", type=int, default=1, help="epochs before ASHA may stop")
    for q in (t, sub.add_parser("diarization", help="tune clustering/windows on a dev set")):
        q.add_argument("--space", help="built-in space name or YAML file (default: the task's)")
        q.add_argument("--num-samples", type=int, default=8)
        q.add_argument("--metric", help="metric to optimise (default depends on the task)")
        q.add_argument("--mode", choices=["min", "max"])
        q.add_argument("--max-concurrent", type=int, default=1, help="trials at once")
        q.add_argument("--output", help="sweep directory (default runs/sweep-<kind>)")
        q.add_argument("--seed", type=int, default=0)
    d = sub.choices["diarization"]
    d.add_argument("--checkpoint", required=True, help="speaker-embedding checkpoint")
    d.add_argument("--dev", required=True, help="dev audio: a folder, a file or a list file")
    d.add_argument("--reference-rttm", required=True, help="RTTM folder or file for the dev set")
    d.add_argument("--collar", type=float, default=0.25, help="+- seconds around boundaries")
    d.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_cli_logging()
    output = args.output or str(REPO_ROOT / "runs" / f"sweep-{args.kind}")  # a path or a URI
    try:
        if args.kind == "train":
            base = experiment_dict(
                args.config,
                args.overrides,
                flags={"data.train": args.data_root, "train.epochs": args.epochs},
            )
            task = (base.get("task") or {}).get("name", "speaker")
            space = load_space(args.space or task)
            summary = run_train_sweep(
                base,
                space,
                output,
                num_samples=args.num_samples,
                metric=args.metric,
                mode=args.mode,
                scheduler=args.scheduler,
                grace_period=args.grace_period,
                max_concurrent=args.max_concurrent,
                seed=args.seed,
            )
        else:
            summary = run_diarization_sweep(
                checkpoint=args.checkpoint,
                dev=args.dev,
                reference_rttm=args.reference_rttm,
                space=load_space(args.space or "diarization"),
                output=output,
                overrides=args.overrides,
                collar=args.collar,
                num_samples=args.num_samples,
                metric=args.metric or "der",
                mode=args.mode or "min",
                max_concurrent=args.max_concurrent,
                seed=args.seed,
            )
    except USER_ERRORS as exc:  # ConfigError is a ValueError
        return user_error(exc)
    print(json.dumps(summary["best"], indent=2, default=str))
    return 0


if __name__ == "__main__":
    run_main(main)

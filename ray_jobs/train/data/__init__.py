"""Per-task training data for ``ray_jobs.train``: one small builder per task, found by name.

``run_training`` is the same for every task (prepare data, ``TorchTrainer``, copy ``model.pt``,
final evaluation); what differs is what the workers eat. A builder turns the experiment's
``data`` section into a :class:`TrainData`: Ray datasets of ready batches-to-be (``train`` and an
optional fixed ``val`` set scored after every epoch), how many rows an epoch has (sizes the LR
schedule), config values only the data knows (a speaker task's number of classes), metadata for
the checkpoint, and the final held-out evaluation, which calls the family's Ray-free evaluation
core (``ray_jobs/evaluate/<family>.py``), never an evaluation CLI. A task's builder is the
``build`` function of ``ray_jobs/train/data/<task>.py``, found by name: a new task adds that
module and edits nothing here. Its ``val`` rows must make the task report its ``sweep_metric``
every epoch: that metric picks ``model.pt`` (the best epoch) and drives early stopping. The heavy lifting stays in Ray-free modules
(``datasets/*``, ``ray_jobs/train/prepare.py``); the Ray part is ``datasets/ray_data.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.data

from datasets import storage
from models.config import ConfigError
from ray_jobs.families import family_module
from ray_jobs.train.experiment import ExperimentConfig, experiment_from_dict

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    train: ray.data.Dataset
    rows_per_epoch: int  # training rows per epoch over all workers
    val: ray.data.Dataset | None = None  # fixed held-out rows scored each epoch (val_* metrics)
    # rows per validation batch; 0 = train.batch_size (1: rows of different lengths)
    val_batch_size: int = 0
    task_config: dict[str, Any] = field(default_factory=dict)  # merged into task.config
    meta: dict[str, Any] = field(default_factory=dict)  # stored in every checkpoint's meta
    summary: dict[str, Any] = field(default_factory=dict)  # what the job reports about the data
    evaluate: Callable[[Path], dict[str, Any]] | None = None  # final model.pt -> metrics
    # True: `train` holds the rows of all epochs and is read once (dynamic mixing)
    single_pass: bool = False
    # single-pass data: the same dataset starting at row N (where a resumed run continues)
    start_at: Callable[[int], ray.data.Dataset] | None = None


PACKAGE = "ray_jobs.train.data"
DATA_INPUTS = ("train", "val", "noise", "rir")  # the data fields that name a path or URI


def build_train_data(exp: ExperimentConfig, output: Path) -> TrainData:
    """The task's builder, ``ray_jobs/train/data/<task>.py``'s ``build``, found by name (the task
    name is the family's, e.g. ``speaker``); an unknown task raises ``ConfigError``. Inputs
    given as URIs (``s3://bucket/shards/vox``) are read from a local mirror (``storage.mirror``):
    h5py, soundfile and the tree scanners need local files."""
    remote = {k: getattr(exp.data, k) for k in DATA_INPUTS if storage.is_uri(getattr(exp.data, k))}
    if remote:
        exp_dict = exp.to_dict()
        exp_dict["data"].update({k: str(storage.mirror(v)) for k, v in remote.items()})
        exp = experiment_from_dict(exp_dict)
    return family_module(PACKAGE, exp.task.name, "build", "training-data builder").build(
        exp, output
    )


def model_sample_rate(exp: ExperimentConfig) -> int | None:
    """The sample rate the experiment's model expects (None when its config has none)."""
    from models.registry import resolve

    _, cfg = resolve(exp.model.name, exp.model.config)
    return getattr(cfg, "sample_rate", None)


def check_sample_rate(exp: ExperimentConfig, rate: int, what: str) -> None:
    model_rate = model_sample_rate(exp)
    if model_rate is not None and model_rate != rate:
        raise ConfigError(
            f"{exp.model.name} runs at {model_rate} Hz but {what} is {rate} Hz; "
            f"set {what}={model_rate}"
        )

"""The experiment config (Ray-free; imported by the job, the worker, Tune and tests): what ``python -m ray_jobs.train --config X.yaml`` reads.

YAML shape (name-plus-config for the model and the task, plain sections for the rest)::

    model: {name: campplus, config: {embed_dim: 192}}
    task: {name: speaker, config: {head: {type: aam, margin: 0.2, scale: 32.0}}}
    data: {crop_seconds: 2.0, augment: {noise_prob: 0.5}}
    optim: {name: adamw, lr: 1.0e-3, warmup_steps: 200}
    train: {epochs: 10, batch_size: 64, precision: auto}

``model.config`` and ``task.config`` are validated strictly against the registered dataclasses at
load time; every section is validated here. ``to_dict()`` of the result is what crosses Ray
process boundaries and what Tune's ``param_space`` overrides by dotted key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datasets.augment import AugmentConfig
from datasets.esc50 import ESC50Preprocess
from datasets.mixing_config import MixConfig
from models.config import ConfigError, apply_overrides, from_dict, load_yaml, to_dict
from models.features import FbankConfig


@dataclass(frozen=True)
class NamedConfig:
    name: str  # a registered model/preset or task name
    config: dict[str, Any] = field(default_factory=dict)  # overrides of the registered defaults


@dataclass(frozen=True)
class DataConfig:
    # Training data: a packed shard manifest (dir or manifest.json) or a raw audio tree that the
    # job packs (resumably) into <output>/shards first. --data-root on the CLI sets this.
    train: str = ""
    layout: str = "auto"  # tree layout or filename-pattern name (see datasets.manifests)
    # Validation data (val): a labelled tree (or shard manifest) held out of training, scored
    # after every epoch and by the family's evaluator at the end. Empty: hold out
    # `val_speakers` speakers of `train` (never trained on).
    val: str = ""
    val_layout: str = "auto"  # layout of `val` (may differ from the training layout)
    # Where raw trees are packed (and held-out lists written); empty: <output>/. A Tune sweep
    # points every trial here, so the data is packed once (packing is resumable).
    pack_dir: str = ""
    val_speakers: int = 0  # speakers of `train` held out as val data when `val` is empty
    # Cut each val utterance into segments of this many seconds (0 = whole utterances):
    # for corpora with one recording per speaker, target trials then pair segments of the same
    # recording (an easier, same-session protocol; say so when reporting).
    val_segment_seconds: float = 0.0
    # Held-out utterances the speaker task embeds every epoch for val_eer / val_min_dcf (a subset
    # seeded by `seed` above this; 0 = all). The final evaluation scores all of them.
    val_max_utterances: int = 400
    sample_rate: int = 16000  # Hz; audio is resampled to this when packed
    crop_seconds: float = 2.0  # random training crop length
    crops_per_utterance: int = 1  # crops drawn from each utterance per epoch
    noise: str = ""  # noise folder or packed noise manifest for additive-noise augmentation
    rir: str = ""  # RIR folder or packed RIR manifest for reverberation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    fbank: FbankConfig = field(default_factory=lambda: FbankConfig(dither=1.0))
    shuffle_buffer: int = 256  # local shuffle buffer (rows) on each trainer
    # -- target speaker extraction (task tse): dynamic mixing of `train` speech with
    # `noise`/`rir`; val mixes come from `val_speakers` (or the `val` tree).
    mix: MixConfig = field(default_factory=MixConfig)
    samples_per_epoch: int = 0  # mixes per epoch; 0 = training utterances x crops_per_utterance
    val_mixes: int = 64  # fixed val mixes: validation each epoch and the final scores
    # -- sound classification (task classify): `train` is an ESC-50-format folder
    val_fold: int = 1  # fold held out for validation (5-fold CV: ray_jobs.train --cv)
    esc50: ESC50Preprocess = field(default_factory=ESC50Preprocess)
    seed: int = 0


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam(w) only
    schedule: Literal["cosine", "exponential", "constant", "step"] = "cosine"
    warmup_steps: int = 0  # warm-up length in optimizer steps
    # linear: ramp from 0 to lr; constant: lr * warmup_factor throughout (ACDNet's recipe);
    # from_min: ramp from min_lr at step 0 to lr (3D-Speaker's WarmupCosineScheduler)
    warmup_mode: Literal["linear", "constant", "from_min"] = "linear"
    warmup_factor: float = 0.1
    min_lr: float = 1e-5  # floor of cosine/exponential decay
    # step schedule: multiply lr by `gamma` at each milestone, given as fractions of training
    # (ACDNet: x0.1 at 30%, 60%, 90%, as in its reference recipe)
    milestones: tuple[float, ...] = (0.3, 0.6, 0.9)
    gamma: float = 0.1
    grad_clip: float = 5.0  # max global grad norm; 0 disables
    # Per-optimizer overrides for tasks with several optimizers (GAN tasks name theirs
    # "generator" and "discriminator"): {discriminator: {lr: 1.0e-4, betas: [0.5, 0.9]}}.
    # Keys are fields of this section; unknown optimizer names or keys raise.
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, over in self.groups.items():
            bad = sorted(set(over) - (set(OptimConfig.__dataclass_fields__) - {"groups"}))
            if bad:
                raise ConfigError(f"optim.groups.{name}: unknown keys {bad}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ConfigError("optim.milestones are fractions of training in (0, 1)")

    def for_group(self, name: str) -> OptimConfig:
        """This config with ``groups[name]`` applied (itself when there is no override)."""
        over = self.groups.get(name)
        if not over:
            return self
        data = {**to_dict(self), **over, "groups": {}}
        return from_dict(OptimConfig, data, path=f"optim.groups.{name}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # per worker, before gradient accumulation
    grad_accum: int = 1  # optimizer step every N batches
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    num_workers: int = 1  # Ray Train workers (data-parallel trainers)
    use_gpu: Literal["auto", "yes", "no"] = "auto"  # auto: GPUs when the cluster has them
    cpus_per_worker: float = 1.0
    # Extra Ray resources per worker (custom node resources: pin workers to a node type, or one
    # per node with a resource each node has once); CPU/GPU come from the fields above.
    worker_resources: dict[str, float] = field(default_factory=dict)
    # Ray Train's worker placement: PACK (fewest nodes) or SPREAD (one per node while the
    # nodes last; after a node is lost the restarted group packs onto the survivors).
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    max_failures: int = 2  # worker-group restarts from the last checkpoint
    log_every: int = 20  # steps between progress log lines
    max_minutes: float = 0.0  # wall-clock budget; 0 = none. Stops cleanly with a checkpoint.
    # voxray checkpoint to start from (fine-tuning): the model's weights and, with `init_head`,
    # its training-only parts (the margin head); optimizer state and counters start fresh.
    init_from: str = ""
    # With `init_from`: true continues the checkpoint's head, and a head that does not fit (other
    # class count or embed dim, other speakers or speed factors) raises ConfigError; false starts
    # a fresh head on purpose (e.g. fine-tuning on other speakers), with a warning in the log.
    init_head: bool = True
    # Checkpoints kept by Ray Train: the best ones by the task's validation metric
    # (Task.sweep_metric, e.g. val_eer), plus always the latest (what a restarted worker resumes
    # from). The best becomes <output>/model.pt.
    num_checkpoints: int = 2
    # Stop after this many epochs in a row without a new best of the task's validation metric;
    # 0 = off. Needs validation data (data.val or data.val_speakers, ...).
    early_stop_patience: int = 0

    def __post_init__(self) -> None:
        if self.early_stop_patience < 0:
            raise ConfigError(
                "train.early_stop_patience is a number of epochs without improvement (0 = off), "
                f"got {self.early_stop_patience}"
            )

    seed: int = 0


@dataclass(frozen=True)
class ExperimentConfig:
    model: NamedConfig
    task: NamedConfig = field(default_factory=lambda: NamedConfig(name="speaker"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "experiment"

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def experiment_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Strictly load and validate, including the model and task configs against the registry."""
    from models.registry import resolve, resolve_task

    exp = from_dict(ExperimentConfig, data)
    resolve(exp.model.name, exp.model.config)  # raises on unknown names/keys/types
    resolve_task(exp.task.name, exp.task.config)
    return exp


def experiment_dict(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The experiment as a plain dict, layered lowest first: the YAML file (or a copy of
    ``base``), ``defaults`` (a job's own values, e.g. the demo's data root), the ``--set``
    ``overrides``, then ``flags`` (a CLI's dedicated options such as ``--data-root``; ``None``
    values are options not given and are skipped). Not validated: see :func:`load_experiment`."""
    if path is None and base is None:
        raise ConfigError("give a config file or a base dict")
    data = load_yaml(path) if path is not None else copy.deepcopy(base or {})
    for layer in (defaults, overrides):
        if layer:
            apply_overrides(data, layer)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        apply_overrides(data, given)
    return data


def load_experiment(
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The one experiment loader (train, ``tune.sweep``, the demo): :func:`experiment_dict`,
    then strict validation -> ``ExperimentConfig``."""
    return experiment_from_dict(
        experiment_dict(path, overrides, base, defaults=defaults, flags=flags)
    )

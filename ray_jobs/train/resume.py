"""The run folder and what ``python -m ray_jobs.train --resume RUN`` may change (Ray-free).

A run folder (``--output``) holds ``experiment.yaml`` (the experiment as the run started it,
written before training) and Ray Train's storage, ``ray_results/<name>``, with the epoch
checkpoints. ``--resume RUN`` reloads that experiment, not the YAML it came from, and continues
from the latest checkpoint. A resumed run is the same run: only the keys in
:data:`RESUME_KEYS` may change (a longer run, another time budget, data moved to another path).
The RNG states a checkpoint carries for each rank (:func:`rng_state`) are defined here too.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from datasets.storage import join
from models.checkpoint import atomic_write
from models.config import ConfigError, load_yaml
from ray_jobs.train.experiment import ExperimentConfig, experiment_dict, experiment_from_dict

log = logging.getLogger(__name__)

EXPERIMENT_FILE = "experiment.yaml"
RESULTS_DIR = "ray_results"  # Ray Train's storage_path inside the run folder

# What --resume may override. More epochs stretch the cosine/step schedule from the step the
# run stopped at (the schedule is a function of step / total steps), so the LR changes there.
RESUME_KEYS = (
    "train.epochs",
    "train.max_minutes",
    "train.max_failures",
    "train.log_every",
    "train.num_checkpoints",
    "data.train",
    "data.val",
    "data.noise",
    "data.rir",
)


def storage_folder(output: str | Path, exp: ExperimentConfig) -> str:
    """Where Ray Train keeps this run's checkpoints: ``<output>/ray_results/<name>`` (a path
    or a URI, as ``output``)."""
    return join(output, RESULTS_DIR, exp.name)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two experiment dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [
            k for key in keys for k in changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    return [] if old == new else [prefix.rstrip(".")]


def record_experiment(output: Path, exp: ExperimentConfig, *, resuming: bool) -> None:
    """Write ``<output>/experiment.yaml`` (atomically). A fresh start in a folder that holds
    another experiment's run is refused: it would continue that run's checkpoints."""
    path = Path(output) / EXPERIMENT_FILE
    ours = exp.to_dict()
    if path.is_file() and not resuming:
        diff = changed_keys(experiment_from_dict(load_yaml(path)).to_dict(), ours)
        if diff:
            raise ConfigError(
                f"{output} holds a run of another experiment (it differs in {', '.join(diff)}); "
                f"continue it with --resume {output}, or give a new --output"
            )
    atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(ours, sort_keys=False)))


def resume_experiment(
    saved: dict[str, Any], overrides: list[str] | dict[str, Any] | None, source: str
) -> ExperimentConfig:
    """The stopped run's experiment with the ``--set`` overrides a resume allows."""
    new = experiment_dict(base=saved, overrides=overrides)
    bad = [k for k in changed_keys(saved, new) if k not in RESUME_KEYS]
    if bad:
        raise ConfigError(
            f"--resume {source} continues that run as configured; it cannot change {bad}. "
            f"Allowed: {', '.join(RESUME_KEYS)}. Start a new run (--config, new --output) "
            "to train another experiment, or --set train.init_from to start from its weights"
        )
    return experiment_from_dict(new)


def run_experiment(run: Path) -> dict[str, Any] | None:
    """The experiment dict a run folder recorded, or None when ``run`` is not a run folder."""
    path = Path(run) / EXPERIMENT_FILE
    return load_yaml(path) if path.is_file() else None


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU, and ``device``'s CUDA) RNG states as
    tensors and primitives, so they fit a ``weights_only`` checkpoint."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)

"""Search spaces for ``python -m tune.sweep``: ``{dotted.config.key: sampler}``.

A space is a flat mapping from a dotted key of the experiment config (the same keys ``--set``
takes: ``optim.lr``, ``task.config.weights.adversarial``, ``model.config.lstm_hidden``) or of the
diarization config (``clustering.threshold``, ``window_seconds``) to a Ray Tune sampler. Named
spaces live in :data:`SPACES`; a YAML file gives the same thing declaratively::

    optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
    model.config.num_blocks: {choice: [2, 4, 6]}
    task.config.weights.si_sdr: {uniform: [0.5, 2.0]}

Keys are checked against the config before any trial starts (``tune.sweep`` applies every
key with a sample value and validates), so a typo fails in seconds instead of in every trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from models.config import ConfigError, load_yaml

# sampler name -> (Tune constructor, how the YAML arguments are passed)
_SAMPLERS = {
    "uniform": tune.uniform,
    "loguniform": tune.loguniform,
    "quniform": tune.quniform,
    "randint": tune.randint,
    "choice": tune.choice,
    "grid": tune.grid_search,
}

# Built-in spaces, by task (the experiment's task.name) or "diarization".
SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "speaker": {
        "optim.lr": {"loguniform": [3e-4, 3e-3]},
        "task.config.head.margin": {"uniform": [0.1, 0.3]},
        "task.config.head.scale": {"choice": [16.0, 32.0]},
    },
    # SoundStream/TinyStream: the three loss weights and the sizes (C, D).
    "codec": {
        "task.config.adversarial_weight": {"loguniform": [0.3, 3.0]},
        "task.config.feature_matching_weight": {"loguniform": [10.0, 300.0]},
        "task.config.mel_weight": {"loguniform": [0.3, 3.0]},
        "model.config.channels": {"choice": [8, 16, 32]},
        "model.config.dim": {"choice": [128, 256, 512]},
    },
    # TSE (TF-GridNet + USEF cross-attention): the three loss weights and the sizes. inject_at is
    # drawn independently of num_blocks, so each of its choices names only blocks below the
    # smallest num_blocks on offer (TSEConfig requires indices < num_blocks).
    "tse": {
        "task.config.si_sdr_weight": {"uniform": [0.5, 2.0]},
        "task.config.mr_stft_weight": {"loguniform": [0.3, 3.0]},
        "task.config.absent_energy_weight": {"loguniform": [0.03, 0.3]},
        "model.config.lstm_hidden": {"choice": [128, 192, 256]},
        "model.config.num_blocks": {"choice": [4, 6]},
        "model.config.inject_at": {"choice": [[0, 2], [0, 1, 2, 3]]},
    },
    "classify": {
        "optim.lr": {"loguniform": [0.01, 0.2]},
        "optim.weight_decay": {"loguniform": [1e-4, 1e-3]},
    },
    # Clustering threshold and window settings; nothing is retrained (see tune.sweep).
    "diarization": {
        "clustering.method": {"choice": ["spectral", "ahc"]},
        "clustering.threshold": {"uniform": [0.3, 0.9]},
        "window_seconds": {"choice": [1.0, 1.5, 2.0]},
        "hop_seconds": {"choice": [0.25, 0.5, 0.75]},
    },
}


def sampler(spec: dict[str, Any], key: str = "") -> Any:
    """``{"loguniform": [lo, hi]}`` -> ``tune.loguniform(lo, hi)`` (and the others in _SAMPLERS)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{key}: a sampler is one of {sorted(_SAMPLERS)} with its arguments")
    ((name, args),) = spec.items()
    if name not in _SAMPLERS:
        raise ConfigError(f"{key}: unknown sampler {name!r}; use one of {sorted(_SAMPLERS)}")
    if name in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{key}: {name} needs a non-empty list of values")
        return _SAMPLERS[name](args)
    if not isinstance(args, list) or len(args) not in (2, 3):
        raise ConfigError(f"{key}: {name} needs [low, high] (quniform: [low, high, q])")
    return _SAMPLERS[name](*args)


def load_space(name_or_path: str) -> dict[str, dict[str, Any]]:
    """A built-in space by name, or a YAML file of ``{dotted.key: {sampler: args}}``."""
    if name_or_path in SPACES:
        return dict(SPACES[name_or_path])
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(
            f"unknown search space {name_or_path!r}: give one of {sorted(SPACES)} or a YAML file"
        )
    data = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of dotted keys to samplers")
    return data


def to_param_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Declarative space -> Tune ``param_space`` (flat: dotted keys stay keys)."""
    return {key: sampler(spec, key) for key, spec in space.items()}


def example_values(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One concrete value per key (the first choice or the lower bound): for validation."""
    out: dict[str, Any] = {}
    for key, spec in space.items():
        ((name, args),) = spec.items()
        out[key] = args[0]
        if name == "randint":
            out[key] = int(args[0])
    return out

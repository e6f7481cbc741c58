"""Every shipped experiment YAML loads strictly; bad configs fail with useful messages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.modules.setdefault("ray", None)

from models.config import ConfigError, load_yaml  # noqa: E402
from ray_jobs.train.experiment import experiment_from_dict, load_experiment  # noqa: E402

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "ray_jobs" / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_configs_load(path):
    exp = load_experiment(path)
    assert experiment_from_dict(exp.to_dict()) == exp


def test_overrides_and_strictness():
    base = load_yaml(CONFIGS[0])
    exp = load_experiment(base=base, overrides=["optim.lr=3e-4", "train.epochs=2"])
    assert exp.optim.lr == 3e-4 and exp.train.epochs == 2
    with pytest.raises(ConfigError, match="unknown key"):
        load_experiment(base=base, overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="model"):
        load_experiment(base=base, overrides=["model.config.no_such_field=1"])
    with pytest.raises(KeyError, match="known models"):
        load_experiment(base=base, overrides=["model.name=nope"])
    with pytest.raises(KeyError, match="known tasks"):
        load_experiment(base=base, overrides=["task.name=nope"])

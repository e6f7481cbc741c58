"""Large-margin fine-tuning (``train.init_from``) continues the trained margin head.

The documented path: ``campplus.yaml`` trains with speed-factor classes, ``campplus_lm.yaml
--set train.init_from=<its model.pt>`` continues from it, head included; a head that does not
fit raises, and ``train.init_head=false`` is the only way to a fresh one.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

sys.modules.setdefault("ray", None)

from models import build_model  # noqa: E402
from models.config import ConfigError  # noqa: E402
from models.registry import resolve_task  # noqa: E402
from ray_jobs.train.experiment import ExperimentConfig, load_experiment  # noqa: E402
from ray_jobs.train.loop import TrainLoop  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"
SPEAKERS = ["spk0", "spk1"]
CPU = torch.device("cpu")


def recipe(name: str, **overrides) -> ExperimentConfig:
    """A shipped recipe on the tiny CAM++, CPU-sized; ``overrides`` as ``--set`` pairs."""
    base = {"model.name": "campplus-tiny", "model.config": {}, "train.batch_size": 4}
    return load_experiment(CONFIGS / name, {**base, **overrides})


def make_loop(exp: ExperimentConfig, num_speakers: int = len(SPEAKERS), meta=None) -> TrainLoop:
    """The job's set-up, Ray-free: classes = speakers x speed factors, as the speaker data sets."""
    speed = exp.data.augment.ordered_speed_factors
    cfg = {**exp.task.config, "num_classes": num_speakers * len(speed)}
    entry, task_cfg = resolve_task(exp.task.name, cfg)
    task = entry.cls(build_model(exp.model.name, exp.model.config), task_cfg)
    meta = meta or {"speakers": SPEAKERS[:num_speakers], "speed_factors": list(speed)}
    return TrainLoop(task, exp, device=CPU, total_steps=4, meta=meta)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny campplus.yaml run with speed-factor classes: ``(model.pt, its task state)``."""
    torch.manual_seed(0)
    loop = make_loop(recipe("campplus.yaml"))
    n_classes = loop.task.cfg.num_classes
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8) % n_classes
    feats = torch.randn(8, 100, 80, generator=g)
    loop.run(lambda _e: [{"feats": feats[i : i + 4], "label": labels[i : i + 4]} for i in (0, 4)])
    path = loop.save(tmp_path_factory.mktemp("base") / "model.pt")
    return path, {k: v.clone() for k, v in loop.task.state_dict().items()}


def test_recipes_share_the_label_space():
    base, lm = recipe("campplus.yaml"), recipe("campplus_lm.yaml")
    speed = base.data.augment.ordered_speed_factors
    assert len(speed) == 3  # speed perturbation: 3x the speakers as classes
    assert lm.data.augment.ordered_speed_factors == speed
    assert lm.model == base.model
    assert lm.task.config["head"]["margin"] > base.task.config["head"]["margin"]
    assert lm.train.init_head
    # the fine-tune keeps the speed classes but trains on unperturbed audio (WeSpeaker's LM)
    assert base.data.augment.speed_perturb and not lm.data.augment.speed_perturb


def test_lm_recipe_continues_the_trained_head(base_run):
    path, saved = base_run
    torch.manual_seed(1)  # a different fresh init than the saved run's
    loop = make_loop(recipe("campplus_lm.yaml", **{"train.init_from": str(path)}))
    head = loop.task.head.weight
    assert head.shape[0] == len(SPEAKERS) * 3
    assert not torch.equal(head, saved["head.weight"])  # the test can tell a fresh head
    loop.init_from(path)
    torch.testing.assert_close(loop.task.head.weight, saved["head.weight"], rtol=0, atol=0)
    for k, v in loop.task.model.state_dict().items():
        torch.testing.assert_close(v, saved[f"model.{k}"], rtol=0, atol=0)
    assert loop.state.step == 0 and loop.state.epoch == 0  # a fresh run from trained weights


def test_mismatched_head_is_refused(base_run):
    path, saved = base_run
    exp = recipe("campplus_lm.yaml", **{"data.augment.speed_factors": [1.0]})
    loop = make_loop(exp)
    before = {k: v.clone() for k, v in loop.task.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        loop.init_from(path)
    msg = str(err.value)
    assert "has 6 classes" in msg and "this run's 2 classes" in msg
    assert "train.init_head=false" in msg and "speed_factors" in msg
    for k, v in loop.task.state_dict().items():  # nothing half-loaded
        assert torch.equal(v, before[k])


def test_same_shape_other_speed_order_is_refused(base_run):
    path, _ = base_run
    exp = recipe("campplus_lm.yaml", **{"data.augment.speed_factors": [1.0, 1.1, 0.9]})
    with pytest.raises(ConfigError, match="speed_factors"):
        make_loop(exp).init_from(path)


def test_fresh_head_on_request_warns(base_run, caplog):
    path, saved = base_run
    exp = recipe(
        "campplus_lm.yaml",
        **{"data.augment.speed_factors": [1.0], "train.init_head": False},
    )
    loop = make_loop(exp, meta={"speakers": SPEAKERS, "speed_factors": [1.0]})
    fresh = loop.task.head.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="ray_jobs.train.loop"):
        loop.init_from(path)
    assert any("init_head is false" in r.getMessage() for r in caplog.records)
    assert torch.equal(loop.task.head.weight, fresh)  # fresh head kept, 2 classes
    for k, v in loop.task.model.state_dict().items():  # backbone from the checkpoint
        assert torch.equal(v, saved[f"model.{k}"])


def test_checkpoint_without_train_state_is_refused(base_run, tmp_path):
    path, _ = base_run
    ckpt = torch.load(path, weights_only=True)
    del ckpt["train_state"]
    torch.save(ckpt, tmp_path / "weights_only.pt")
    loop = make_loop(recipe("campplus_lm.yaml"))
    with pytest.raises(ConfigError, match="no training-only parts"):
        loop.init_from(tmp_path / "weights_only.pt")

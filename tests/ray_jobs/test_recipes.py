"""Our shipped VoxCeleb recipes carry 3D-Speaker's published hyperparameters, so a GPU user
reproduces the published setup by name.

The values below are those of 3D-Speaker's ``egs/voxceleb/sv-cam++/conf/cam++.yaml``,
``sv-eres2net/conf/eres2net.yaml`` and ``sv-ecapa/conf/ecapa_tdnn.yaml``; their schedules count
epochs, ours optimizer steps, converted with VoxCeleb2-dev's size and the global batch (the
recipes say so in their headers). ``voxray_overrides`` is the same mapping the step-parity test
(``test_reference_parity.py``) proves equivalent to speakerlab's trainer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.modules.setdefault("ray", None)

from models.registry import build_model, resolve_task  # noqa: E402
from ray_jobs.compare_reference.trainer import ReferenceRecipe, voxray_overrides  # noqa: E402
from ray_jobs.train.experiment import load_experiment  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs"
VOX2_DEV_UTTERANCES = 1_092_009
GLOBAL_BATCH = 256  # 4 GPUs x 64
STEPS_PER_EPOCH = VOX2_DEV_UTTERANCES // GLOBAL_BATCH  # drop_last=True, as their DataLoader

# 3D-Speaker's VoxCeleb ERes2Net and ECAPA-TDNN recipes share one training schedule
LONG_SCHEDULE = ReferenceRecipe(
    num_epoch=70, lr=0.2, min_lr=5e-5, margin=0.3, margin_start_epoch=20, margin_fix_epoch=50
)

# recipe file -> (published training values, embedding size, model parameters in millions)
PUBLISHED = {
    "campplus.yaml": (ReferenceRecipe(), 512, 7.18),
    "eres2net.yaml": (LONG_SCHEDULE, 192, 6.61),
    "ecapa_tdnn.yaml": (LONG_SCHEDULE, 192, 20.77),
}


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_carries_published_hyperparameters(name):
    recipe, embed_dim, params_m = PUBLISHED[name]
    exp = load_experiment(CONFIGS / name)
    as_dict = exp.to_dict()
    expected = voxray_overrides(recipe, STEPS_PER_EPOCH)
    wrong = {k: (_get(as_dict, k), v) for k, v in expected.items() if _get(as_dict, k) != v}
    assert wrong == {}, f"{name}: (ours, published) {wrong}"
    # batch: 64 per worker x 4 workers = 3D-Speaker's 256 over 4 GPUs
    assert exp.train.batch_size * exp.train.num_workers * exp.train.grad_accum == GLOBAL_BATCH
    # features and crops: 80-dim Kaldi fbank with mean normalisation, no dither; 3-s crops;
    # speed perturbation as 3x the speaker classes
    assert exp.data.fbank.num_mel_bins == 80 and exp.data.fbank.mean_norm
    assert exp.data.fbank.dither == 0.0
    assert exp.data.crop_seconds == 3.0
    assert sorted(exp.data.augment.speed_factors) == [0.9, 1.0, 1.1]
    assert exp.data.augment.speed_perturb
    model = build_model(exp.model.name, exp.model.config)
    assert model.cfg.embed_dim == embed_dim
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(params_m, abs=0.01)
    resolve_task(exp.task.name, {**exp.task.config, "num_classes": 2})  # the head config builds


def test_published_schedule_in_steps():
    """The conversion itself, spelled out for CAM++ (what the recipe header states)."""
    o = voxray_overrides(ReferenceRecipe(), STEPS_PER_EPOCH)
    assert STEPS_PER_EPOCH == 4265
    assert o["optim.warmup_steps"] == 21325
    assert o["task.config.head.margin_warmup_start"] == 63975
    assert o["task.config.head.margin_warmup_steps"] == 42650

"""End-to-end training on the shared local Ray cluster: Ray Data shards -> TorchTrainer.

Includes the fault-tolerance check: SIGKILL the training worker mid-run; Ray Train replaces it
and training resumes from the last epoch checkpoint and finishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import load_model, read_checkpoint
from ray_jobs.train.experiment import load_experiment
from tests.ray_jobs.conftest import assert_best_epoch_reported, train_killing_a_worker

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny" / "campplus.yaml"


def test_train_end_to_end(ray_cluster, synth_tree, tmp_path, capsys):
    """``python -m ray_jobs.train`` (its CLI, in this process, on the shared cluster): val_eer
    on the held-out speakers every epoch, model.pt is the best epoch, the report says which."""
    from ray_jobs.train.cli import main

    out = tmp_path / "out"
    argv = ["--config", str(CONFIG), "--data-root", str(synth_tree), "--output", str(out)]
    argv += ["--set", "data.val_speakers=3", "--set", "train.epochs=3"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "report.json").read_text())
    assert_best_epoch_reported(out, "speaker", epochs=3)
    assert report["train_speakers"] == 5 and report["val_utterances_per_epoch"] == 18
    assert report["train_metrics"]["epoch"] == report["epochs_run"] == 3
    assert 0.0 <= report["model_pt"]["val_eer"] <= 1.0 and not report["early_stopped"]
    ev = report["eval"]
    assert ev["val_speakers"] == 3 and ev["num_trials"] == 18 * 17 // 2
    # the final evaluation of model.pt scores the same 18 utterances and all their trials: it
    # reproduces the val_eer its epoch reported
    assert ev["eer"] == pytest.approx(report["model_pt"]["val_eer"], abs=1e-6)
    model = load_model(out / "model.pt")
    with torch.no_grad():
        assert model(torch.randn(1, 150, 80)).shape == (1, model.cfg.embed_dim)


def test_killed_worker_resumes_from_checkpoint(ray_cluster, synth_tree, tmp_path):
    out = tmp_path / "out"
    epochs = 6
    exp = load_experiment(
        CONFIG,
        overrides={
            "data.train": str(synth_tree),
            "train.epochs": epochs,
            "train.max_failures": 2,
            "data.crops_per_utterance": 3,
        },
    )
    progress = out / "progress" / "rank0.json"
    report, killed_pid = train_killing_a_worker(exp, out, progress)
    assert report["train_metrics"]["epoch"] == epochs
    ckpt = read_checkpoint(out / "model.pt")
    assert ckpt["meta"]["epoch"] == epochs
    assert ckpt["meta"]["resumed_from"], "the final run did not resume from a checkpoint"
    final = json.loads(progress.read_text())
    assert final["pid"] != killed_pid and final["phase"] == "done"

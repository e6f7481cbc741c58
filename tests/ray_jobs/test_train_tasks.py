"""The one training job for the other task families: codec (GAN, two optimizers) and classify,
end to end on the shared local Ray cluster (data builders -> TorchTrainer -> model.pt -> eval)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import load_model, read_checkpoint
from ray_jobs.train.experiment import load_experiment
from tests.ray_jobs.conftest import assert_best_epoch_reported

pytestmark = pytest.mark.ray

CONFIGS = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny"


@pytest.mark.realdata
def test_classifier_trains_on_an_esc50_folder_and_cross_validates(ray_cluster, real_data, tmp_path):
    from ray_jobs.train.job import run_cross_validation

    exp = load_experiment(
        CONFIGS / "classify.yaml",
        overrides={"data.train": str(real_data / "sound-events" / "esc50"), "train.epochs": 1},
    )
    # the shared folder has one clip in each of folds 1-5: two folds keep the test short
    exp_dict = exp.to_dict()
    summary = run_cross_validation(exp, tmp_path / "cv", folds=[1, 2])
    assert sorted(summary["folds"]) == ["1", "2"]
    assert all(0.0 <= a <= 1.0 for a in summary["folds"].values())
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["folds"] == summary["folds"]
    report = json.loads((tmp_path / "cv" / "fold2" / "report.json").read_text())
    assert report["task"] == "classify" and report["val_clips"] == 1
    assert report["eval"]["fold"] == 2
    assert "val_acc" in report["train_metrics"] and "val_loss" in report["train_metrics"]
    assert_best_epoch_reported(tmp_path / "cv" / "fold2", "classify", epochs=1)  # val_acc
    ckpt = read_checkpoint(tmp_path / "cv" / "fold2" / "model.pt")
    assert ckpt["meta"]["val_fold"] == 2 and len(ckpt["meta"]["classes"]) == 50
    assert "dog" in ckpt["meta"]["classes"]
    model = load_model(tmp_path / "cv" / "fold2" / "model.pt")
    with torch.no_grad():
        assert model(torch.randn(2, 30225)).shape == (2, 50)
    assert exp_dict["data"]["val_fold"] == 1  # the base experiment is not mutated


@pytest.fixture(scope="module")
def synth_tree(tmp_path_factory):
    from datasets.synth import generate_corpus

    root = tmp_path_factory.mktemp("synth")
    generate_corpus(root, num_speakers=6, utts_per_speaker=3, seconds=(1.0, 1.5), seed=11)
    return root


def test_codec_gan_trains_with_two_optimizers_and_is_scored(ray_cluster, synth_tree, tmp_path):
    from models.pipelines.codec import CodecPipeline
    from ray_jobs.train.job import run_training

    exp = load_experiment(CONFIGS / "codec.yaml", overrides={"data.train": str(synth_tree)})
    report = run_training(exp, tmp_path / "out")
    m = report["train_metrics"]
    assert report["task"] == "codec" and m["epoch"] == 2
    # the discriminator phase started (disc_warmup_steps 4 of 8 steps) and was validated
    assert m["train_gan_active"] > 0 and m["train_d_loss"] > 0
    assert "val_mel_distance" in m and "val_si_sdr" in m
    assert_best_epoch_reported(tmp_path / "out", "codec", epochs=2)  # val_mel_distance
    ev = report["eval"]
    assert ev["num_files"] == report["val_files"] > 0
    assert ev["bitrate_kbps"] == pytest.approx(1.0)  # tinystream-ultra_tiny: 2 x 8 bits x 62.5 Hz
    # the checkpoint carries the discriminators and both optimizers for resuming
    ckpt = read_checkpoint(tmp_path / "out" / "model.pt")
    assert set(ckpt["train_state"]["optimizers"]) == {"generator", "discriminator"}
    assert any(k.startswith("discriminators") for k in ckpt["train_state"]["task"])
    codec = CodecPipeline.from_checkpoint(tmp_path / "out" / "model.pt")
    wav = torch.randn(16000).numpy() * 0.1
    assert codec.decode(codec.encode(wav, 16000)).shape == wav.shape

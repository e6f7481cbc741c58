"""TSE training end to end on the shared local Ray cluster: synthetic corpus -> dynamic mixes
(Ray Data CPU tasks) -> TorchTrainer, 2 epochs of ``tse-tiny`` -> ``model.pt`` + evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ray_jobs.train.experiment import load_experiment
from tests.ray_jobs.conftest import assert_best_epoch_reported

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny" / "tse.yaml"
EVAL_KEYS = {"num_mixes", "num_present", "num_absent", "si_sdr", "si_sdri", "pesq", "stoi"}
EVAL_KEYS |= {"mix_pesq", "mix_stoi", "absent_suppression_db"}


def test_train_tse_end_to_end(ray_cluster, tmp_path):
    from datasets.synth import generate_corpus
    from models.pipelines.tse import TargetExtractor
    from ray_jobs.train.job import run_training

    generate_corpus(
        tmp_path / "speech", num_speakers=10, utts_per_speaker=3, seconds=(1.5, 2.5), seed=5
    )
    exp = load_experiment(CONFIG, overrides={"data.train": str(tmp_path / "speech")})
    report = run_training(exp, tmp_path / "out")
    metrics = report["train_metrics"]
    assert metrics["epoch"] == 2
    assert math.isfinite(metrics["val_si_sdr"])
    assert_best_epoch_reported(tmp_path / "out", "tse", epochs=2)  # val_si_sdri every epoch
    assert report["train_speakers"] == 6 and report["val_mixes"] == 4
    ev = report["eval"]
    assert EVAL_KEYS <= set(ev) and ev["num_mixes"] == 4
    assert ev["num_present"] + ev["num_absent"] == 4
    extractor = TargetExtractor.from_checkpoint(tmp_path / "out" / "model.pt")
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal(24000)).astype(np.float32)
    out = extractor(mix, 48000, mix[:24000], 48000)
    assert out.shape == mix.shape and np.all(np.isfinite(out))
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["eval"]["num_mixes"] == 4

"""Diarization sweeps: trials on the shared local Ray cluster over two synthetic conversations."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from models.config import ConfigError
from tests.conversations import write_dev_set


@pytest.fixture(scope="module")
def devset(tmp_path_factory):
    import models

    root = tmp_path_factory.mktemp("diar_sweep")
    write_dev_set(root / "dev", root / "ref", {"d0": 10, "d1": 11})
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("ecapa_tdnn-tiny").eval(), root / "m.pt")
    return root, ckpt


def test_invalid_space_keys_fail_before_trials(devset, tmp_path):
    from tune.diarization import run_diarization_sweep

    root, ckpt = devset
    common = {"checkpoint": ckpt, "dev": root / "dev", "reference_rttm": root / "ref"}
    with pytest.raises(ConfigError, match="does not fit"):
        run_diarization_sweep(**common, space={"clustering.treshold": {"uniform": [0.3, 0.9]}},
                              output=tmp_path / "a")  # fmt: skip
    with pytest.raises(ConfigError, match="does not fit"):
        run_diarization_sweep(**common, space={"window_seconds": {"choice": ["long"]}},
                              output=tmp_path / "b")  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_builtin_space_fits_the_config():
    from models.pipelines.diarize import diarization_config
    from tune.spaces import SPACES, example_values

    cfg = diarization_config(example_values(SPACES["diarization"]))
    assert cfg.clustering.method in ("spectral", "ahc")


@pytest.mark.ray
def test_sweep_reports_der_and_writes_best(ray_cluster, devset, tmp_path):
    from tune.diarization import run_diarization_sweep

    root, ckpt = devset
    out = tmp_path / "sweep"
    summary = run_diarization_sweep(
        checkpoint=ckpt, dev=root / "dev", reference_rttm=root / "ref",
        space={"clustering.method": {"choice": ["ahc"]},
               "clustering.threshold": {"grid": [0.05, 0.3, 0.6]}},
        output=out, overrides=["min_segment_seconds=0.2"], num_samples=1, seed=0,
    )  # fmt: skip
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["error"] is None for t in trials)
    ders = [t["der"] for t in trials]
    assert all(isinstance(d, float) and 0.0 <= d for d in ders)
    assert summary["best"]["der"] == min(ders) and summary["kind"] == "diarization"
    assert json.loads((out / "sweep.json").read_text())["best"]["der"] == min(ders)
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["min_segment_seconds"] == 0.2
    assert best["clustering.threshold"] == summary["best"]["config"]["clustering.threshold"]
    # the written overrides are what ray_jobs.diarize --set and serve diarization.config take
    from models.pipelines.diarize import diarization_config

    assert diarization_config(best).clustering.threshold == best["clustering.threshold"]

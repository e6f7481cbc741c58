"""Tune sweeps reuse the training job: trials on the shared local Ray cluster, ASHA, sweep.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.config import ConfigError, load_yaml

CONFIG = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny" / "campplus.yaml"


def test_spaces_parse_and_reject_bad_specs(tmp_path):
    from tune.spaces import SPACES, load_space, sampler, to_param_space

    space = to_param_space({"optim.lr": {"loguniform": [1e-4, 1e-2]}, "x": {"choice": [1, 2]}})
    assert 1e-4 <= space["optim.lr"].sample() <= 1e-2
    assert space["x"].sample() in (1, 2)
    for bad in ({"lognormal": [0, 1]}, {"uniform": [1]}, {"choice": []}, {"a": 1, "b": 2}):
        with pytest.raises(ConfigError):
            sampler(bad, "k")
    assert set(load_space("diarization")) == set(SPACES["diarization"])
    path = tmp_path / "s.yaml"
    path.write_text("optim.lr: {uniform: [0.001, 0.002]}\n")
    assert load_space(str(path)) == {"optim.lr": {"uniform": [0.001, 0.002]}}
    with pytest.raises(ConfigError, match="unknown search space"):
        load_space("no-such-space")


def test_space_keys_are_validated_before_any_trial():
    from tune.sweep import validate_space

    base = load_yaml(CONFIG)
    validate_space(base, {"optim.lr": {"uniform": [1e-4, 1e-3]}})
    with pytest.raises(ConfigError, match="does not fit"):
        validate_space(base, {"optim.learning_rate": {"uniform": [1e-4, 1e-3]}})
    with pytest.raises(ConfigError, match="does not fit"):
        validate_space(base, {"model.config.no_such_field": {"choice": [1]}})


@pytest.mark.ray
def test_train_sweep_runs_trials_through_the_training_job(ray_cluster, tmp_path):
    from datasets.synth import generate_corpus
    from tune.sweep import run_train_sweep

    tree = tmp_path / "synth"
    generate_corpus(tree, num_speakers=4, utts_per_speaker=4, seconds=(1.2, 1.6), seed=5)
    base = load_yaml(CONFIG)
    base["data"]["train"] = str(tree)
    base["train"]["epochs"] = 2
    # 2 CPUs: the trial's sliver + a half-CPU trainer + one 1-CPU data task fit side by side
    base["train"]["cpus_per_worker"] = 0.5
    space = {"optim.lr": {"grid": [1e-3, 3e-3]}}
    # the speaker task ranks trials by val_eer: without held-out speakers it is refused
    with pytest.raises(ConfigError, match="val_eer"):
        run_train_sweep(base, space, tmp_path / "refused", num_samples=1)
    base["data"]["val_speakers"] = 2
    summary = run_train_sweep(base, space, tmp_path / "sweep", num_samples=1, grace_period=1)
    trials = summary["trials"]
    assert sorted(t["config"]["optim.lr"] for t in trials) == [1e-3, 3e-3]
    assert all(t["error"] is None and 0.0 <= t["val_eer"] <= 1.0 for t in trials)
    # every epoch reached Tune through Ray Train's callback (ASHA may stop a trial after 1)
    assert all(1 <= t["iterations"] <= 2 for t in trials)
    assert summary["best"]["val_eer"] == min(t["val_eer"] for t in trials)
    saved = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert saved["metric"] == "val_eer" and len(saved["trials"]) == 2
    # Tune's TensorBoard logs (README: tensorboard --logdir <output>/tune): one events
    # file per trial; each trial's own run logs per step under trials/<trial>/tensorboard
    assert len(list((tmp_path / "sweep" / "tune").glob("*/*/events.out.tfevents.*"))) == 2
    # the experiment is named after the job and config (ray_jobs.submission.run_name)
    assert [p.name for p in (tmp_path / "sweep" / "tune").iterdir() if p.is_dir()] == [
        f"voxray-sweep-train-{base['name']}"
    ]
    assert len(list((tmp_path / "sweep" / "trials").glob("*/tensorboard/events.*"))) == 2
    # the data was packed once, in the driver, and every trial trained on those shards
    assert (tmp_path / "sweep" / "data" / "shards" / "manifest.json").is_file()
    assert not any((tmp_path / "sweep" / "trials").glob("*/shards"))
    # a trial ASHA lets run to the end finishes its job (model.pt); a stopped one still names
    # its last epoch checkpoint
    assert len(list((tmp_path / "sweep" / "trials").glob("*/model.pt"))) >= 1
    assert all(Path(t["checkpoint"], "model.pt").is_file() for t in trials)


def test_cli_reports_config_errors(caplog, capsys):
    from tune.sweep import main

    rc = main(["train", "--config", str(CONFIG), "--space", "no-such-space"])
    assert rc == 2 and "unknown search space" in caplog.text
    assert capsys.readouterr().out == ""  # errors are logs (stderr), never stdout


def test_trials_leave_a_cpu_for_their_data_or_the_sweep_refuses():
    from ray_jobs.train.experiment import load_experiment
    from tune.sweep import TRIAL_CPU, plan_trials

    tse = Path(CONFIG).with_name("tse.yaml")
    exp = load_experiment(tse)  # one 1-CPU trainer
    # 2 CPUs: one trial; its trainer gives up the Tune function's sliver so that a whole CPU
    # stays free for the mixing tasks
    assert plan_trials(exp, 2.0, max_concurrent=4) == (1, 1.0 - TRIAL_CPU)
    assert plan_trials(exp, 8.0, max_concurrent=3)[0] == 3
    assert plan_trials(exp, 8.0, max_concurrent=8)[0] == 4
    with pytest.raises(ConfigError, match=r"needs 2 CPUs .* the cluster has 1"):
        plan_trials(exp, 1.0, max_concurrent=1)
    two = load_experiment(tse, overrides={"train.num_workers": 2, "train.cpus_per_worker": 0.5})
    assert plan_trials(two, 2.0, max_concurrent=1) == (1, 0.5 - TRIAL_CPU / 2)


@pytest.mark.ray
@pytest.mark.timeout(420)
def test_tse_sweep_makes_progress_on_two_cpus(ray_cluster, tmp_path):
    """A TSE sweep of the tiny config as shipped (a 1-CPU trainer) on the 2-CPU cluster: the
    trial's mixing tasks get a CPU, so it trains and reports the TSE sweep metric."""
    import time

    from datasets.synth import generate_corpus
    from tune.sweep import run_train_sweep

    generate_corpus(
        tmp_path / "speech", num_speakers=10, utts_per_speaker=3, seconds=(1.5, 2.5), seed=5
    )
    base = load_yaml(Path(CONFIG).with_name("tse.yaml"))
    base["data"]["train"] = str(tmp_path / "speech")
    base["train"]["epochs"] = 1
    t0 = time.monotonic()
    summary = run_train_sweep(
        base,
        {"task.config.si_sdr_weight": {"grid": [1.0]}},
        tmp_path / "sweep",
        num_samples=1,
        scheduler="fifo",
    )
    assert summary["metric"] == "val_si_sdri"
    (trial,) = summary["trials"]
    assert trial["error"] is None and trial["iterations"] == 1
    assert isinstance(trial["val_si_sdri"], float) and math.isfinite(trial["val_si_sdri"])
    assert time.monotonic() - t0 < 400

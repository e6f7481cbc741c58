"""Readable run names (ray_jobs.submission): submission ids, and the names a submitted job's
datasets and Tune experiment take from its submission id."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ray_jobs.submission import config_label, current_submission_id, run_name, submission_id

WHEN = 1796034300.0  # 2026-11-30 10:25:00 UTC


def test_ids_name_the_job_config_and_time():
    assert config_label("ray_jobs/configs/tiny/campplus.yaml") == "tiny-campplus"
    assert config_label("ray_jobs/configs/ecapa_tdnn.yaml") == "ecapa-tdnn"
    assert config_label("/elsewhere/My Recipe.yml") == "my-recipe"
    assert config_label("runs/demo/model.pt") == "model"
    assert config_label("CAM++ v2") == "cam-v2"
    sid = submission_id("train", "ray_jobs/configs/tiny/campplus.yaml", when=WHEN)
    assert sid == "voxray-train-tiny-campplus-20261130-102500"
    with pytest.raises(ValueError, match="no letters or digits"):
        submission_id("train", "++")


def test_run_name_is_the_submission_id_inside_a_submitted_job(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert current_submission_id() is None
    assert run_name("sweep-train", "tiny-campplus") == "voxray-sweep-train-tiny-campplus"
    # what Ray's job supervisor sets for the entrypoint process
    meta = {"runtime_env": {}, "metadata": {"job_submission_id": "voxray-train-x-1"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(meta))
    assert run_name("train", "tiny-campplus") == "voxray-train-x-1"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {}}))
    assert current_submission_id() is None


def test_command_line_prints_an_id():
    r = subprocess.run(
        [sys.executable, "-m", "ray_jobs.submission", "extract", "runs/demo/model.pt"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("voxray-extract-model-20")

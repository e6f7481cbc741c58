"""Training, resuming, evaluating and extracting against a real S3-compatible server (moto in
server mode on loopback, ``tests/s3_server.py``) on the shared local Ray cluster.

One tiny CAM++ run writes its Ray Train checkpoints, ``model.pt``, ``report.json`` and logs to
``s3://<bucket>/run``; its training worker is SIGKILLed after the first epoch checkpoint is
registered in the bucket, and Ray Train resumes it from that S3 checkpoint. Evaluation and
extraction then read ``model.pt`` back from S3 (``--checkpoint s3://...``), and extraction
writes its outputs to S3 too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datasets import storage
from models import read_checkpoint
from ray_jobs.train.experiment import load_experiment
from tests.ray_jobs.conftest import train_killing_a_worker

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny" / "campplus.yaml"


def test_train_to_s3_resumes_after_worker_kill_then_evaluate_and_extract_read_it(
    s3_bucket, ray_cluster, synth_tree, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))  # where s3:// reads are cached
    run = f"{s3_bucket}/run"
    epochs = 3
    sets = {"train.epochs": epochs, "train.max_failures": 2}  # two restarts allowed
    exp = load_experiment(CONFIG, overrides={"data.train": str(synth_tree), **sets})
    # the worker's progress file is written on its node (this one) and uploaded per epoch;
    # the checkpoint registration is read from the bucket
    progress = storage.stage_dir(run, "logs") / "progress" / "rank0.json"
    report, killed_pid = train_killing_a_worker(exp, run, progress)
    assert report["train_metrics"]["epoch"] == epochs
    assert report["checkpoint"] == f"{run}/model.pt"

    # everything the run wrote is in the bucket: the epoch checkpoints Ray Train kept, model.pt,
    # the report, the experiment and the logs (TensorBoard, metrics.csv, curves.png)
    files = storage.list_files(run)
    assert {"model.pt", "report.json", "experiment.yaml", "metrics.csv", "curves.png"} <= set(files)
    assert any(f.startswith(f"ray_results/{exp.name}/checkpoint_") for f in files)
    assert any(f.startswith("tensorboard/") or f.startswith("tb/") for f in files), files
    assert json.loads(storage.read_text(f"{run}/report.json")) == json.loads(
        json.dumps(report, default=float)
    )
    final = json.loads(storage.read_text(f"{run}/progress/rank0.json"))
    assert final["pid"] != killed_pid and final["phase"] == "done"
    # model.pt, read back from S3 (--checkpoint s3://...): the last epoch's workers restored
    # the S3 checkpoint written before the kill
    local = storage.fetch(f"{run}/model.pt")
    ckpt = read_checkpoint(local)
    assert ckpt["meta"]["epoch"] == epochs
    assert ckpt["meta"]["resumed_from"], "the final run did not resume from a checkpoint"
    # ... and the only checkpoints there were are those in the bucket: none on local disk
    assert not (storage.stage_dir(run, "run") / "ray_results").exists()

    from ray_jobs.evaluate.cli import main as evaluate

    capsys.readouterr()
    argv = ["--checkpoint", f"{run}/model.pt", "--data-root", str(synth_tree), "--json"]
    assert evaluate([*argv, "--report", f"{run}/eval"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert 0.0 <= ev["eer"] <= 1.0 and ev["num_trials"] > 0
    assert json.loads(storage.read_text(f"{run}/eval/result.json"))["eer"] == ev["eer"]
    assert "scores.tsv" in storage.list_files(f"{run}/eval")

    from ray_jobs.extract.cli import main as extract

    emb = f"{s3_bucket}/emb"
    argv = ["--data-root", str(synth_tree), "--checkpoint", f"{run}/model.pt", "--output", emb]
    assert extract(argv) == 0
    assert "utterances.parquet" in storage.list_files(emb)
    table = pq.read_table(storage.fetch(f"{emb}/utterances.parquet"))
    assert table.num_rows == 8 * 6
    assert any(n.startswith("parts/") for n in storage.list_files(emb))  # uploaded as written
    # the same command on another node (no local stage folder): it resumes from the bucket
    shutil.rmtree(storage.stage_dir(emb, "extract"))
    assert extract(argv) == 0
    summary = json.loads(storage.read_text(f"{emb}/summary.json"))
    assert summary["processed_this_run"] == 0 and summary["resumed_from_parts"] == 8 * 6

"""``python -m ray_jobs.train --resume`` on the shared local Ray cluster, and the checkpoint
scratch folders the workers write epoch checkpoints to (none may be left behind).

A tiny TSE run (single-pass dynamic mixing) is stopped by its time budget right after its
first optimizer step, mid-epoch; ``--resume`` continues it from that checkpoint to the end of
its configured epochs, with the mixing stream started at the row the run had reached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import pytest

from models import read_checkpoint

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "ray_jobs" / "configs" / "tiny" / "tse.yaml"


def scratch_left(output: Path) -> list[Path]:
    from ray_jobs.train.worker import scratch_prefix

    run_id = hashlib.sha1(str(output.resolve()).encode()).hexdigest()[:12]
    return list(Path(tempfile.gettempdir()).glob(scratch_prefix(run_id) + "*"))


def test_stopped_run_resumes_from_its_checkpoint(ray_cluster, tmp_path, caplog, capsys):
    from datasets.synth import generate_corpus
    from ray_jobs.train.cli import main

    caplog.set_level(logging.INFO)
    generate_corpus(
        tmp_path / "speech", num_speakers=10, utts_per_speaker=3, seconds=(1.5, 2.5), seed=5
    )
    out = tmp_path / "run"
    first = [
        "--config",
        str(CONFIG),
        "--data-root",
        str(tmp_path / "speech"),
        "--output",
        str(out),
        "--max-minutes",
        "1e-6",  # stops right after the first optimizer step, with a checkpoint
    ]
    assert main(first) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_metrics"]["step"] == 1 and report["train_metrics"]["epoch"] == 0
    stopped = read_checkpoint(out / "model.pt")
    assert (stopped["meta"]["epoch"], stopped["meta"]["epoch_batch"]) == (0, 1)
    assert (out / "experiment.yaml").is_file()
    # every epoch checkpoint was copied into storage and its scratch folder removed
    assert scratch_left(out) == []
    assert "left by dead workers" not in caplog.text

    # a resumed run is the same run: it refuses changes other than the allowed keys
    assert main(["--resume", str(out), "--set", "optim.lr=0.1"]) == 2
    assert "cannot change ['optim.lr']" in caplog.text
    # and a fresh run of another experiment into the folder is refused
    assert main(first[:-2] + ["--set", "optim.lr=0.1"]) == 2
    assert "holds a run of another experiment" in caplog.text

    caplog.clear()
    assert main(["--resume", str(out), "--max-minutes", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = report["train_metrics"]
    steps_per_epoch = 16 // 4  # samples_per_epoch // batch_size of the tiny config
    assert metrics["epoch"] == 2 and metrics["step"] == 2 * steps_per_epoch
    assert "at epoch 1 (+1 batches)" in caplog.text  # continued mid-epoch, not from scratch
    assert report["resumed_from"]
    final = read_checkpoint(out / "model.pt")
    assert final["meta"]["resumed_from"], "the workers did not restore the checkpoint"
    assert final["meta"]["step"] == 2 * steps_per_epoch
    assert scratch_left(out) == []

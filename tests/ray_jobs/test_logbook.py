"""Epoch ends of the Ray-free loop: best epoch, early stopping, TensorBoard / metrics.csv /
curves.png (ray_jobs/train/logbook.py), driven through TrainLoop with a tiny CAM++."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
import torch

sys.modules.setdefault("ray", None)

from models import read_checkpoint  # noqa: E402
from models.config import ConfigError  # noqa: E402
from ray_jobs.train.logbook import (  # noqa: E402
    BestTracker,
    Logbook,
    pick_best,
    read_metrics_csv,
)
from ray_jobs.train.loop import TrainLoop  # noqa: E402
from tests.ray_jobs.test_loop import NUM_CLASSES, make_exp, make_task  # noqa: E402


def profiles(n, seed):
    return torch.randn(n, 80, generator=torch.Generator().manual_seed(seed)) * 2


def train_batches(n=16, t=60, bs=8):
    """Training speakers: each class has its own spectral profile."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % NUM_CLASSES
    feats = profiles(NUM_CLASSES, 0)[labels][:, None, :] + torch.randn(n, t, 80, generator=g)

    def epoch(_e):
        for i in range(0, n, bs):
            yield {"feats": feats[i : i + bs], "label": labels[i : i + bs]}

    return epoch


def val_rows(num_speakers=3, per_speaker=3, same_audio=False):
    """Held-out speakers (other profiles), one whole utterance per batch, lengths differ.
    ``same_audio``: every row is the same utterance, so no trial can be told apart."""
    g = torch.Generator().manual_seed(7)
    prof = profiles(num_speakers, 99)
    rows = []
    for k in range(num_speakers * per_speaker):
        spk = k % num_speakers
        t = 80 + 10 * k
        feats = prof[spk] + torch.randn(t, 80, generator=g)
        rows.append({"feats": feats, "speaker": spk, "index": k})
    if same_audio:
        rows = [{**r, "feats": rows[0]["feats"]} for r in rows]

    def batches():
        for r in rows:
            yield {
                "feats": r["feats"][None],
                "speaker": torch.tensor([r["speaker"]]),
                "index": torch.tensor([r["index"]]),
            }

    return batches


def read_tb_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of every TensorBoard events file under ``logdir``: TFRecord framing (length,
    masked CRC, payload, CRC) around ``Event`` protos, parsed with tensorboardX's protos."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert files, f"no events file in {logdir}"
    for path in files:
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_best_tracker_and_pick_best():
    t = BestTracker("val_eer", "min")
    assert t.update({"epoch": 1, "step": 4, "val_eer": 0.3})
    assert not t.update({"epoch": 2, "step": 8, "val_eer": 0.3})  # a tie is no improvement
    assert not t.update({"epoch": 3, "step": 12})  # not reported: nothing changes
    assert (t.value, t.epoch, t.step, t.since) == (0.3, 1, 4, 1)
    assert t.update({"epoch": 4, "step": 16, "val_eer": 0.1}) and t.since == 0
    assert not t.update({"epoch": 5, "step": 20, "val_eer": float("nan")})
    again = BestTracker("val_eer", "min")
    again.load_state_dict(t.state_dict())
    assert again == t
    up = BestTracker("val_acc", "max")
    assert up.update({"epoch": 1, "step": 1, "val_acc": 0.5})
    assert not up.update({"epoch": 2, "step": 2, "val_acc": 0.4})
    with pytest.raises(ValueError, match="mode"):
        BestTracker("val_eer", "lowest")

    reports = [{"epoch": 3, "m": 0.2}, {"epoch": 1, "m": 0.5}, {"epoch": 2, "m": 0.2}, {"epoch": 4}]
    assert pick_best(reports, "m", "min") == 2  # ties: the earliest epoch
    assert pick_best(reports, "m", "max") == 1
    assert pick_best([{"epoch": 1}], "m", "min") is None
    with pytest.raises(ConfigError, match="early_stop_patience"):
        make_exp(early_stop_patience=-1)


def test_loop_tracks_best_and_writes_logbook(tmp_path):
    epochs, steps_per_epoch, log_every = 3, 2, 1
    exp = make_exp(epochs=epochs, batch_size=8, log_every=log_every)
    loop = TrainLoop(
        make_task(), exp, device=torch.device("cpu"), total_steps=6, output_dir=tmp_path
    )
    reports: list[tuple[dict, Path]] = []

    def checkpoint_dir():
        d = tmp_path / f"ck{len(reports)}"
        d.mkdir()
        return d

    loop.run(
        train_batches(),
        report=lambda m, d: reports.append((dict(m), d)),
        checkpoint_dir=checkpoint_dir,
        val_batches=val_rows(),
    )
    metrics = [m for m, _ in reports]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert all({"val_eer", "val_min_dcf", "lr", "best_epoch"} <= set(m) for m in metrics)
    assert all(0.0 <= m["val_eer"] <= 1.0 for m in metrics)
    # the best epoch the loop names is the reported minimum, and its checkpoint holds it
    best = pick_best(metrics, "val_eer", "min")
    assert metrics[-1]["best_epoch"] == metrics[best]["epoch"] == loop.best.epoch
    assert loop.best.value == min(m["val_eer"] for m in metrics)
    ckpt = read_checkpoint(reports[best][1] / "model.pt")
    assert ckpt["meta"]["epoch"] == metrics[best]["epoch"]
    assert ckpt["meta"]["metrics"]["val_eer"] == loop.best.value
    assert ckpt["train_state"]["best"]["epoch"] == loop.best.epoch

    # metrics.csv: one row per epoch, the leading columns first, the reported values
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "step", "lr"] and {"train_loss", "val_eer"} <= set(header)
    assert len(rows) == epochs
    for row, m in zip(rows, metrics, strict=True):
        assert row["step"] == m["step"] and row["val_eer"] == pytest.approx(m["val_eer"])
        assert row["train_loss"] == pytest.approx(m["train_loss"])
    # curves.png decodes
    from PIL import Image

    with Image.open(tmp_path / "curves.png") as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 200
    # TensorBoard: epoch scalars once per epoch, step scalars every log_every steps
    tb = read_tb_scalars(tmp_path / "tensorboard")
    val = tb["epoch/val_eer"]
    assert [s for s, _ in val] == [1, 2, 3]
    assert [v for _, v in val] == pytest.approx([m["val_eer"] for m in metrics])
    expect_steps = list(range(log_every, epochs * steps_per_epoch + 1, log_every))
    assert [s for s, _ in tb["step/lr"]] == expect_steps
    assert [s for s, _ in tb["step/train_loss"]] == expect_steps
    assert {"epoch/train_loss", "epoch/lr", "epoch/val_min_dcf"} <= set(tb)


def test_early_stop_when_validation_stalls(tmp_path):
    """Held-out rows that are all one utterance: every trial scores the same, so val_eer never
    improves after epoch 1 and patience 2 stops the run after epoch 3 of 10."""
    exp = make_exp(epochs=10, batch_size=8, early_stop_patience=2)
    loop = TrainLoop(
        make_task(), exp, device=torch.device("cpu"), total_steps=10, output_dir=tmp_path
    )
    reports = []
    last = loop.run(
        train_batches(n=8),
        report=lambda m, d: reports.append(dict(m)),
        val_batches=val_rows(same_audio=True),
    )
    assert len(reports) == 3 and loop.state.epoch == 3
    assert [r["val_eer"] for r in reports] == [reports[0]["val_eer"]] * 3
    assert (last["best_epoch"], last["epochs_since_best"]) == (1, 2)
    assert len(read_metrics_csv(tmp_path / "metrics.csv")) == 3
    # the counters travel with the checkpoint, so a restarted worker stops at the same epoch
    loop.save(tmp_path / "m.pt")
    resumed = TrainLoop(make_task(), exp, device=torch.device("cpu"), total_steps=10)
    resumed.restore(tmp_path / "m.pt")
    assert resumed.best == loop.best


def test_logbook_reopened_after_a_restart_keeps_earlier_epochs(tmp_path):
    book = Logbook(tmp_path, start_epoch=0, metric="val_eer", mode="min")
    for e in (1, 2, 3):
        book.epoch({"epoch": e, "step": 10 * e, "lr": 1e-3, "train_loss": 1.0 / e, "val_eer": 0.1})
    book.close()
    # resumed from the epoch-2 checkpoint: epoch 3 is trained again
    book = Logbook(tmp_path, start_epoch=2, metric="val_eer", mode="min")
    book.epoch({"epoch": 3, "step": 30, "lr": 1e-3, "train_loss": 0.25, "val_eer": 0.05})
    book.close()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["train_loss"] == 0.25

"""Exact resume of the Ray-free loop, the run folder's resume plumbing, and atomic writes.

A run that is stopped after every optimizer step and continued from its checkpoint each time
(a fresh task, optimizer and loop every time) ends with the same weights, per-step losses and
learning rates, bit for bit, as the same run trained straight through: model, optimizer, LR
schedule position, RNG states (torch, NumPy, Python) and the data position all come back.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from models import build_model, read_checkpoint  # noqa: E402
from models.checkpoint import atomic_path, atomic_write  # noqa: E402
from models.speaker.heads import HeadConfig  # noqa: E402
from models.tasks.speaker import SpeakerTask, SpeakerTaskConfig  # noqa: E402
from ray_jobs.train.experiment import load_experiment  # noqa: E402
from ray_jobs.train.loop import TrainLoop  # noqa: E402

NUM_CLASSES = 4
BATCHES_PER_EPOCH = 2
EPOCHS = 2
TOTAL_STEPS = BATCHES_PER_EPOCH * EPOCHS


class RecordingTask(SpeakerTask):
    """The speaker task, keeping each step's loss (what the comparison reads)."""

    losses: list[float]

    def train_step(self, batch, ctx):
        metrics = super().train_step(batch, ctx)
        self.losses.append(metrics["loss"])
        return metrics


def make_task(seed: int) -> RecordingTask:
    torch.manual_seed(seed)
    task = RecordingTask(
        build_model("campplus-tiny"),
        SpeakerTaskConfig(
            num_classes=NUM_CLASSES, head=HeadConfig(type="aam", margin=0.1, scale=16.0)
        ),
    )
    task.losses = []
    return task


def make_exp(max_minutes: float):
    return load_experiment(
        base={"model": {"name": "campplus-tiny"}, "task": {"name": "speaker"}},
        overrides={
            "optim.lr": 3e-3,
            "optim.warmup_steps": 2,
            "optim.schedule": "cosine",
            "train.epochs": EPOCHS,
            "train.batch_size": 8,
            "train.max_minutes": max_minutes,
        },
    )


def make_batch(epoch: int, i: int, global_rng: bool) -> dict[str, torch.Tensor]:
    """Batch ``i`` of ``epoch``: fixed class profiles plus, with ``global_rng``, noise drawn
    from the process-wide torch, NumPy and Python RNGs (as many data loaders do), so the
    comparison fails unless the resumed run restores all three."""
    g = torch.Generator().manual_seed(1000 * epoch + i)
    labels = torch.arange(8) % NUM_CLASSES
    profiles = torch.randn(NUM_CLASSES, 80, generator=torch.Generator().manual_seed(7)) * 2
    feats = profiles[labels][:, None, :] + torch.randn(8, 40, 80, generator=g)
    if global_rng:
        feats = feats + 0.1 * torch.randn(8, 40, 80)
        feats = feats + torch.from_numpy(0.1 * np.random.randn(8, 40, 80).astype(np.float32))
        feats = feats * (1.0 + 0.1 * random.random())
    return {"feats": feats, "label": labels}


def epoch_batches(global_rng: bool):
    def batches(epoch: int):
        for i in range(BATCHES_PER_EPOCH):
            yield make_batch(epoch, i, global_rng)

    return batches


def seek(global_rng: bool):
    def batches(epoch: int, start: int):
        for i in range(start, BATCHES_PER_EPOCH):
            yield make_batch(epoch, i, global_rng)

    return batches


def seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def lr_trace(loop: TrainLoop, trace: list[float]) -> None:
    """Record the LR of every optimizer step (a wrapper of the real ``_set_lr``)."""
    set_lr = loop._set_lr
    loop._set_lr = lambda: trace.append(set_lr()) or trace[-1]


@pytest.mark.parametrize("use_seek", [True, False], ids=["seek", "read-and-drop"])
def test_resume_after_every_step_is_exact(tmp_path, use_seek):
    """``seek``: the data source starts mid-epoch and draws from the global RNGs; without it the
    loop reads and drops the batches it already trained on (a source with its own seeds)."""
    cpu = torch.device("cpu")
    seed_globals(0)
    straight = TrainLoop(make_task(0), make_exp(0), device=cpu, total_steps=TOTAL_STEPS)
    straight_lrs: list[float] = []
    lr_trace(straight, straight_lrs)
    straight.run(epoch_batches(use_seek))
    assert straight.state.step == TOTAL_STEPS
    straight_rng = torch.get_rng_state()

    seed_globals(0)
    losses: list[float] = []
    lrs: list[float] = []
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    restarts = 0
    # a time budget of ~0 stops every run right after its first optimizer step, with a
    # checkpoint: each restart trains one step, mid-epoch and at epoch ends alike
    budget = 1e-9
    task = make_task(0)
    while True:
        loop = TrainLoop(task, make_exp(budget), device=cpu, total_steps=TOTAL_STEPS)
        if restarts:
            seed_globals(restarts)  # a new process: its RNGs hold anything
            loop.restore(ckpt / "model.pt")
        lr_trace(loop, lrs)
        loop.run(
            epoch_batches(use_seek),
            checkpoint_dir=lambda: ckpt,
            seek=seek(use_seek) if use_seek else None,
        )
        losses += task.losses
        if loop.state.epoch == EPOCHS:
            break
        restarts += 1
        assert restarts <= TOTAL_STEPS, "the resumed runs make no progress"
        task = make_task(100 + restarts)  # other initial weights: the checkpoint must win

    # every run ended in a stop; the last one trained nothing: its stop had come right after
    # the last batch, so it only closed the epoch
    assert restarts == TOTAL_STEPS
    assert loop.state.step == TOTAL_STEPS
    assert losses == straight.task.losses  # bit-exact, step by step
    assert lrs == straight_lrs
    ours, theirs = task.state_dict(), straight.task.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    opt_ours = loop.optimizers["main"].state_dict()["state"]
    opt_theirs = straight.optimizers["main"].state_dict()["state"]
    assert all(
        torch.equal(opt_ours[i]["exp_avg_sq"], opt_theirs[i]["exp_avg_sq"]) for i in opt_theirs
    )
    # and the global RNGs carry on where the straight run's are
    assert torch.equal(torch.get_rng_state(), straight_rng)


def test_checkpoint_holds_the_data_position_and_rng(tmp_path):
    cpu = torch.device("cpu")
    seed_globals(3)
    loop = TrainLoop(make_task(0), make_exp(1e-9), device=cpu, total_steps=TOTAL_STEPS)
    loop.run(epoch_batches(True), checkpoint_dir=lambda: tmp_path)
    ckpt = read_checkpoint(tmp_path / "model.pt")  # weights_only: primitives and tensors only
    ts = ckpt["train_state"]
    assert (ts["epoch"], ts["epoch_batch"], ts["step"]) == (0, 1, 1)
    assert ckpt["meta"]["epoch_batch"] == 1
    assert len(ts["rng"]) == 1 and set(ts["rng"][0]) == {"python", "numpy", "torch"}
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    seed_globals(99)
    TrainLoop(make_task(1), make_exp(0), device=cpu, total_steps=9).restore(tmp_path / "model.pt")
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "model.pt"
    atomic_write(path, lambda tmp: tmp.write_bytes(b"old checkpoint"))

    def crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a new chec")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no partial file left
    with atomic_path(tmp_path / "report.json") as tmp:
        tmp.write_text("{}")
        assert not (tmp_path / "report.json").exists()  # nothing visible before the end
    assert (tmp_path / "report.json").read_text() == "{}"


def test_run_folder_records_the_experiment_and_limits_what_a_resume_changes(tmp_path):
    from models.config import ConfigError
    from ray_jobs.train.resume import record_experiment, resume_experiment, run_experiment

    exp = make_exp(0)
    record_experiment(tmp_path, exp, resuming=False)
    saved = run_experiment(tmp_path)
    assert saved == exp.to_dict()
    record_experiment(tmp_path, exp, resuming=False)  # the same experiment again: fine
    other = load_experiment(base=saved, overrides={"optim.lr": 0.1})
    with pytest.raises(ConfigError, match=r"another experiment \(it differs in optim.lr\)"):
        record_experiment(tmp_path, other, resuming=False)
    longer = resume_experiment(saved, ["train.epochs=5", "train.max_minutes=0"], "RUN")
    assert longer.train.epochs == 5 and longer.optim == exp.optim
    with pytest.raises(ConfigError, match=r"cannot change \['model.config.embed_dim'\]"):
        resume_experiment(saved, ["model.config.embed_dim=64"], "RUN")
    assert run_experiment(tmp_path / "nowhere") is None

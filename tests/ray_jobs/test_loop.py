"""The Ray-free training loop: learning, accumulation, checkpoint/resume, time budget."""

from __future__ import annotations

import sys

import pytest
import torch

sys.modules.setdefault("ray", None)

from models import build_model, load_model  # noqa: E402
from models.config import ConfigError  # noqa: E402
from models.speaker.heads import HeadConfig  # noqa: E402
from models.tasks.speaker import SpeakerTask, SpeakerTaskConfig  # noqa: E402
from ray_jobs.train.experiment import load_experiment  # noqa: E402
from ray_jobs.train.loop import TrainLoop, lr_factor  # noqa: E402
from tests.ray_jobs.conftest import run_gloo_ranks  # noqa: E402

NUM_CLASSES = 4


def make_exp(**train):
    overrides = {f"train.{k}": v for k, v in train.items()}
    overrides.update({"optim.lr": 3e-3, "optim.warmup_steps": 0, "optim.grad_clip": 5.0})
    return load_experiment(
        base={"model": {"name": "campplus-tiny"}, "task": {"name": "speaker"}},
        overrides=overrides,
    )


def make_data(n=32, t=120, seed=0):
    """Class-dependent fbank-like features: each class has its own spectral profile."""
    g = torch.Generator().manual_seed(seed)
    profiles = torch.randn(NUM_CLASSES, 80, generator=g) * 2
    labels = torch.arange(n) % NUM_CLASSES
    feats = profiles[labels][:, None, :] + torch.randn(n, t, 80, generator=g)
    return feats, labels


def batches(feats, labels, bs=8):
    def epoch(_e):
        for i in range(0, len(labels), bs):
            yield {"feats": feats[i : i + bs], "label": labels[i : i + bs]}

    return epoch


def make_task():
    torch.manual_seed(0)
    return SpeakerTask(
        build_model("campplus-tiny"),
        SpeakerTaskConfig(
            num_classes=NUM_CLASSES, head=HeadConfig(type="aam", margin=0.1, scale=16.0)
        ),
    )


def test_loop_learns_and_checkpoints(tmp_path):
    feats, labels = make_data()
    exp = make_exp(epochs=6, batch_size=8)
    task = make_task()
    loop = TrainLoop(task, exp, device=torch.device("cpu"), total_steps=24, output_dir=tmp_path)
    reports = []
    metrics = loop.run(
        batches(feats, labels),
        report=lambda m, d: reports.append((m, d)),
        checkpoint_dir=lambda: (
            (tmp_path / f"ck{len(reports)}").mkdir() or tmp_path / f"ck{len(reports)}"
        ),
    )
    assert len(reports) == 6 and loop.state.epoch == 6 and loop.state.step == 24
    first, last = reports[0][0], reports[-1][0]
    assert last["train_loss"] < first["train_loss"]
    assert metrics["train_acc"] > 0.9
    model = load_model(reports[-1][1] / "model.pt")
    with torch.no_grad():
        torch.testing.assert_close(model(feats[:4]), task.model.eval()(feats[:4]))
    assert (tmp_path / "progress" / "rank0.json").is_file()


def test_resume_restores_everything(tmp_path):
    feats, labels = make_data()
    exp = make_exp(epochs=2, batch_size=8)
    task = make_task()
    loop = TrainLoop(task, exp, device=torch.device("cpu"), total_steps=8)
    loop.run(batches(feats, labels))
    loop.save(tmp_path / "m.pt")
    resumed = TrainLoop(
        make_task(), make_exp(epochs=3, batch_size=8), device=torch.device("cpu"), total_steps=12
    )
    resumed.restore(tmp_path / "m.pt")
    assert (resumed.state.epoch, resumed.state.step) == (2, 8)
    for a, b in zip(task.parameters(), resumed.task.parameters(), strict=True):
        assert torch.equal(a, b)
    opt_a = loop.optimizers["main"].state_dict()["state"]
    opt_b = resumed.optimizers["main"].state_dict()["state"]
    assert torch.equal(opt_a[0]["exp_avg"], opt_b[0]["exp_avg"])
    resumed.run(batches(feats, labels))
    assert resumed.state.epoch == 3 and resumed.state.step == 12


def test_grad_accumulation_steps(tmp_path):
    feats, labels = make_data(n=32)
    loop = TrainLoop(
        make_task(),
        make_exp(epochs=1, batch_size=8, grad_accum=2),
        device=torch.device("cpu"),
        total_steps=2,
    )
    loop.run(batches(feats, labels))
    assert loop.state.step == 2  # 4 batches / accumulation 2


def test_time_budget_stops_cleanly(tmp_path):
    feats, labels = make_data()
    exp = make_exp(epochs=100, batch_size=8, max_minutes=1e-9)
    loop = TrainLoop(make_task(), exp, device=torch.device("cpu"), total_steps=400)
    loop.run(batches(feats, labels))
    assert loop.state.step == 1 and loop.state.epoch == 0


def test_nonfinite_loss_raises():
    class Bad(SpeakerTask):
        def forward(self, batch):
            out = super().forward(batch)
            out["loss"] = out["loss"] * float("nan")
            return out

    feats, labels = make_data()
    task = Bad(build_model("campplus-tiny"), SpeakerTaskConfig(num_classes=NUM_CLASSES))
    loop = TrainLoop(
        task, make_exp(epochs=1, batch_size=8), device=torch.device("cpu"), total_steps=4
    )
    with pytest.raises(FloatingPointError, match="non-finite"):
        loop.run(batches(feats, labels))


def test_lr_schedule():
    exp = make_exp()
    cfg = exp.optim.__class__(lr=1.0, warmup_steps=10, min_lr=0.01, schedule="cosine")
    assert lr_factor(0, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.01)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.505, abs=1e-3)


def test_bf16_autocast_trains_on_cpu():
    feats, labels = make_data()
    loop = TrainLoop(
        make_task(),
        make_exp(epochs=2, batch_size=8, precision="bf16"),
        device=torch.device("cpu"),
        total_steps=8,
    )
    assert loop.amp_dtype == torch.bfloat16
    metrics = loop.run(batches(feats, labels))
    assert loop.state.step == 8 and metrics["train_loss"] == metrics["train_loss"]  # finite
    with pytest.raises(ValueError, match="fp16 training needs a CUDA device"):
        TrainLoop(
            make_task(), make_exp(precision="fp16"), device=torch.device("cpu"), total_steps=1
        )


@pytest.mark.gpu
def test_loop_on_cuda_with_bf16_autocast(tmp_path):
    feats, labels = make_data()
    device = torch.device("cuda")
    task = make_task().to(device)
    loop = TrainLoop(task, make_exp(epochs=4, batch_size=8), device=device, total_steps=16)
    assert loop.amp_dtype == torch.bfloat16  # "auto" picks bf16 on CUDA
    first = loop.run(batches(feats, labels))
    assert loop.state.step == 16 and first["train_acc"] > 0.5
    loop.save(tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt")  # CPU, eval mode
    with torch.no_grad():
        ref = task.model.eval()(feats[:2].to(device)).float().cpu()
        torch.testing.assert_close(model(feats[:2]), ref, rtol=1e-3, atol=1e-3)


def test_step_schedule_and_group_overrides():
    from ray_jobs.train.experiment import OptimConfig
    from ray_jobs.train.loop import lr_factor

    cfg = OptimConfig(lr=1.0, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert lr_factor(0, 100, cfg) == 1.0
    assert lr_factor(49, 100, cfg) == 1.0
    assert lr_factor(50, 100, cfg) == pytest.approx(0.1)
    assert lr_factor(80, 100, cfg) == pytest.approx(0.01)
    warm = OptimConfig(lr=1.0, schedule="step", warmup_steps=10, warmup_mode="constant")
    assert lr_factor(0, 100, warm) == lr_factor(9, 100, warm) == pytest.approx(0.1)
    assert lr_factor(10, 100, warm) == 1.0
    over = OptimConfig(lr=1e-3, groups={"discriminator": {"lr": 1e-4, "betas": [0.5, 0.9]}})
    d = over.for_group("discriminator")
    assert d.lr == 1e-4 and d.betas == (0.5, 0.9) and d.groups == {}
    assert over.for_group("generator") is over
    with pytest.raises(ConfigError, match="unknown keys"):
        OptimConfig(groups={"discriminator": {"learning_rate": 1.0}})


def test_validate_averages_eval_step_by_batch_size():
    """Per-batch metrics (here the codec task's) are batch-size-weighted means over the val
    batches, computed in eval mode, leaving weights, BN statistics and the training mode alone."""
    from models.tasks.codec import CodecTask, CodecTaskConfig

    torch.manual_seed(0)
    task = CodecTask(
        build_model("tinystream-ultra_tiny"),
        CodecTaskConfig(waveform_channels=2, stft_channels=2, mel_windows=(64, 256, 1024)),
    )
    loop = TrainLoop(task, make_exp(), device=torch.device("cpu"), total_steps=1)
    g = torch.Generator().manual_seed(3)
    val = [{"wav": 0.1 * torch.randn(n, 2048, generator=g)} for n in (3, 3, 2)]
    task.eval()
    parts = [task.eval_step(b) for b in val]
    task.train()
    expect = sum(p["mel_distance"] * w for p, w in zip(parts, (3, 3, 2), strict=True)) / 8
    before = {k: v.clone() for k, v in task.state_dict().items()}
    got = loop.validate(val)
    assert got["val_mel_distance"] == pytest.approx(expect, rel=1e-5)
    assert {"val_si_sdr", "val_kbps"} <= set(got)
    assert task.training
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())


def _reduce_worker(rank: int) -> tuple[list, list]:
    from ray_jobs.train.loop import _all_reduce_grads

    w = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.full((3,), float(rank + 1))  # rank 0: 1s, rank 1: 2s
    b.grad = torch.full((2, 2), float(10 * rank))
    _all_reduce_grads(torch.optim.SGD([w, b], lr=1.0))
    return w.grad.tolist(), b.grad.flatten().tolist()


def test_manual_gradient_sync_averages_across_ranks():
    """GAN tasks average gradients themselves (no DDP): two gloo ranks agree on the mean."""
    for wg, bg in run_gloo_ranks(_reduce_worker, timeout=120):
        assert wg == [1.5, 1.5, 1.5] and bg == [5.0] * 4

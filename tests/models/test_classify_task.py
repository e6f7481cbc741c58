"""models.tasks.classify: soft-label KL / CE losses, accuracy, multi-crop evaluation, overfitting."""

from __future__ import annotations

import sys
import time

sys.modules.setdefault("ray", None)  # models/ must import without Ray

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import models.tasks.classify  # noqa: E402, F401  (registers "classify")
from models import build_model  # noqa: E402
from models.registry import resolve_task  # noqa: E402
from models.tasks.classify import ClassifyTask, ClassifyTaskConfig  # noqa: E402

torch.set_num_threads(2)
L = 30225


class FakeCtx:
    """The loop's StepContext surface, with a plain SGD optimizer."""

    def __init__(self, task, lr=0.01):
        self.step = 0
        self.task = task
        self.opt = torch.optim.SGD(task.parameters(), lr=lr, momentum=0.9, nesterov=True)

    def forward(self, batch):
        return self.task(batch)

    def backward(self, name, loss):
        assert name == "main"
        self.opt.zero_grad()
        loss.backward()

    def step_optimizer(self, name):
        self.opt.step()
        self.step += 1
        return True


def tiny_task(**kw) -> ClassifyTask:
    torch.manual_seed(0)
    return ClassifyTask(build_model("acdnet-tiny"), ClassifyTaskConfig(num_classes=10, **kw))


def test_registered_and_config_strict():
    entry, cfg = resolve_task("classify", {"num_classes": 10, "loss": "ce"})
    assert entry.cls is ClassifyTask and cfg == ClassifyTaskConfig(num_classes=10, loss="ce")
    with pytest.raises(ValueError, match="predicts 10"):
        ClassifyTask(build_model("acdnet-tiny"), ClassifyTaskConfig(num_classes=50))
    with pytest.raises(ValueError, match="loss"):
        ClassifyTask(build_model("acdnet-tiny"), ClassifyTaskConfig(num_classes=10, loss="mse"))


def test_kl_and_ce_losses_match_definitions():
    task = tiny_task().eval()
    wav = 0.1 * torch.randn(3, L)
    soft = torch.softmax(torch.randn(3, 10), -1)
    with torch.no_grad():
        log_p = task.model(wav).log_softmax(-1)
        out = task({"wav": wav, "label": soft})
        ce_task = ClassifyTask(task.model, ClassifyTaskConfig(num_classes=10, loss="ce")).eval()
        out_ce = ce_task({"wav": wav, "label": soft})
    kl = (soft * (soft.log() - log_p)).sum(-1).mean()
    torch.testing.assert_close(out["loss"], kl)
    entropy = -(soft * soft.log()).sum(-1).mean()
    torch.testing.assert_close(out_ce["loss"], kl + entropy)  # CE = KL + H(label)
    expected_acc = (log_p.argmax(-1) == soft.argmax(-1)).float().mean()
    torch.testing.assert_close(out["acc"], expected_acc)


def test_integer_labels_equal_one_hot():
    task = tiny_task().eval()
    wav, ids = 0.1 * torch.randn(2, L), torch.tensor([3, 7])
    with torch.no_grad():
        a = task({"wav": wav, "label": ids})
        b = task({"wav": wav, "label": F.one_hot(ids, 10).float()})
        logits = task.model(wav)
    torch.testing.assert_close(a["loss"], b["loss"])
    torch.testing.assert_close(a["loss"], F.cross_entropy(logits, ids))  # KL to one-hot = CE
    with pytest.raises(ValueError, match=r"0\.\.9"):
        task({"wav": wav, "label": torch.tensor([3, 10])})
    with pytest.raises(ValueError, match=r"\(B, 10\) soft labels"):
        task({"wav": wav, "label": torch.zeros(2, 5)})


def test_multi_crop_eval_averages_probabilities():
    task = tiny_task().eval()
    crops = 0.1 * torch.randn(2, 3, L)
    ids = torch.tensor([1, 4])
    metrics = task.eval_step({"wav": crops, "label": ids})
    with torch.no_grad():
        probs = task.model(crops.reshape(6, L)).softmax(-1).reshape(2, 3, 10).mean(1)
    assert metrics["loss"] == pytest.approx(float(F.nll_loss(probs.log(), ids)), rel=1e-5)
    assert metrics["acc"] == pytest.approx(float((probs.argmax(-1) == ids).float().mean()))


def test_mixup_in_task_changes_training_inputs_only():
    task = tiny_task(mixup_alpha=0.4)
    wav, ids = 0.1 * torch.randn(4, L), torch.tensor([0, 1, 2, 3])
    task.eval()
    with torch.no_grad():
        ref = task({"wav": wav, "label": ids})["loss"]
        again = task({"wav": wav, "label": ids})["loss"]
    torch.testing.assert_close(ref, again)  # no mixing in eval mode
    torch.manual_seed(1)
    mixed_wav, mixed_label = task._mixup(wav, F.one_hot(ids, 10).float())
    np.testing.assert_allclose(mixed_label.sum(-1).numpy(), 1.0, rtol=1e-6)
    assert (mixed_label > 0).sum() > 4  # at least one example got a second class


def test_train_step_lowers_loss():
    task = tiny_task()
    ctx = FakeCtx(task, lr=0.05)
    wav, ids = 0.1 * torch.randn(2, L), torch.tensor([0, 1])
    first = task.train_step({"wav": wav, "label": ids}, ctx)
    assert set(first) == {"loss", "acc"} and ctx.step == 1
    for _ in range(3):
        last = task.train_step({"wav": wav, "label": ids}, ctx)
    assert last["loss"] < first["loss"]


@pytest.mark.realdata
@pytest.mark.slow
def test_micro_acdnet_overfits_real_esc50_clips(real_data):
    """22 SGD steps (Nesterov, lr 0.02) on the 7 clips' loudest crops -> 100% training accuracy.

    Training accuracy is the train-mode batch accuracy (what the reference reports); the
    eval-mode check follows a re-estimation of the batch-norm statistics on the same clips
    (one forward pass), since 22 steps are too few for the running averages to settle.
    """
    from datasets.esc50 import load_clip, multi_crop, read_esc50

    clips = read_esc50(real_data / "sound-events" / "esc50")
    crops = [multi_crop(load_clip(c), L, 10) for c in clips]
    x = torch.from_numpy(np.stack([c[np.argmax((c**2).sum(1))] for c in crops]))  # (7, L)
    batch = {"wav": x, "label": torch.tensor([c.target for c in clips])}
    torch.manual_seed(0)
    task = ClassifyTask(build_model("micro-acdnet"), ClassifyTaskConfig(num_classes=50))
    ctx = FakeCtx(task, lr=0.02)
    t0 = time.monotonic()
    history = [task.train_step(batch, ctx) for _ in range(22)]
    elapsed = time.monotonic() - t0
    assert history[-1]["acc"] == 1.0, history[-5:]
    assert history[-1]["loss"] < 0.2 * history[0]["loss"]
    for m in task.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: exactly this batch's statistics
    with torch.no_grad():
        task.model(x)
    task.eval()
    assert task.eval_step(batch)["acc"] == 1.0
    print(f"micro-acdnet: 22 SGD steps on 7 clips in {elapsed:.1f} s")  # shown with -s

"""Step parity with 3D-Speaker's trainer (the installed ``speakerlab`` package).

CAM++ (192) from speakerlab's own initialisation, copied into ours through the 3D-Speaker
importer; the same fbank batches (speakerlab's ``FBank`` on real LibriSpeech speech) in the same
order; 3D-Speaker's VoxCeleb CAM++ recipe (SGD Nesterov, ``WarmupCosineScheduler``, AAM with the
exponential ``MarginScheduler``), shortened to 60 steps so that warm-up, cosine decay and the
margin ramp all happen. Our task and loop (``SpeakerTask`` in ``TrainLoop``, Ray-free) must give
speakerlab's loss at every step.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from datasets.audio import crop_or_pad, load_audio  # noqa: E402
from models import load_model  # noqa: E402
from models.hub import convert_file  # noqa: E402
from models.registry import resolve_task  # noqa: E402
from models.speaker.heads import AAMSoftmax  # noqa: E402
from models.tasks.speaker import SpeakerTask  # noqa: E402
from ray_jobs.compare_reference.trainer import (  # noqa: E402
    ReferenceRecipe,
    ReferenceTrainer,
    voxray_overrides,
)
from ray_jobs.train.experiment import load_experiment  # noqa: E402
from ray_jobs.train.loop import TrainLoop  # noqa: E402

margin_loss = pytest.importorskip("speakerlab.loss.margin_loss")
processor = pytest.importorskip("speakerlab.process.processor")
DTDNN = pytest.importorskip("speakerlab.models.campplus.DTDNN")

SPEAKERS, BATCH, STEPS, STEPS_PER_EPOCH, CROP_S = 8, 4, 50, 5, 0.5
# cam++.yaml's schedules shortened (60 epochs -> 10, warm-up 5 -> 1, margin ramp 15-25 -> 3-5),
# 5 steps per epoch: 50 steps with 5 of warm-up and the margin ramp over steps 15-25. Its LRs
# scaled to the batch (linear scaling, 0.1 at 256 -> 0.0016 at 4, min_lr alike): at lr 0.1 a
# batch of 4 is chaotic, where 1e-6 float differences between two correct trainers grow to
# whole units of loss within a few steps and no comparison means anything.
RECIPE = ReferenceRecipe(
    num_epoch=10,
    lr=0.1 * BATCH / 256,
    min_lr=1e-4 * BATCH / 256,
    warmup_epoch=1,
    margin_start_epoch=3,
    margin_fix_epoch=5,
)


@pytest.fixture(scope="module")
def fbank_batches(real_data):
    """``STEPS`` batches of speakerlab fbank (B, T, 80) + labels, from 8 real speakers."""
    files = sorted((real_data / "speech/librispeech-train-clean-100").glob("*.flac"))[:SPEAKERS]
    assert len(files) == SPEAKERS
    wavs = [load_audio(f, 16000)[0] for f in files]
    fbank = processor.FBank(80, sample_rate=16000, mean_nor=True)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(STEPS):
        labels = rng.choice(SPEAKERS, size=BATCH, replace=False)
        feats = [
            fbank(torch.from_numpy(crop_or_pad(wavs[i], int(CROP_S * 16000), rng))) for i in labels
        ]
        out.append((torch.stack(feats), torch.as_tensor(labels, dtype=torch.int64)))
    return out


@pytest.fixture
def one_thread():
    """One intra-op thread: CAM++'s small CPU kernels gain nothing from two on a shared
    machine, and spin-waiting threads double the test's CPU time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.realdata
def test_loss_matches_speakerlab_at_every_step(fbank_batches, tmp_path, one_thread):
    """Step by step: before each step both trainers hold the same state (weights, BatchNorm
    statistics, momentum buffers); each takes the step its own way (schedules, margin, loss,
    SGD update) and the loss and the updated weights are compared. Then ours is set to the
    reference's state again. CAM++ trained at batch 4 is chaotic (BatchNorm over 4 embeddings,
    very steep first convolutions): two correct trainers whose float32 sums differ in the last
    bit drift apart by whole units of loss within ~5 free-running steps (and within ~10 even in
    float64), so a free-running comparison could not tell a bug from rounding; re-synchronising
    every step keeps the comparison exact while still exercising every step's schedule values
    and update."""
    torch.manual_seed(0)
    ref_model = DTDNN.CAMPPlus(feat_dim=80, embedding_size=192)
    ref = ReferenceTrainer(ref_model, 192, SPEAKERS, RECIPE, STEPS_PER_EPOCH)
    # speakerlab's initial weights into ours through the importer (a 3D-Speaker state dict)
    torch.save(ref_model.state_dict(), tmp_path / "campplus.bin")
    convert_file(
        "3dspeaker", tmp_path / "campplus.bin", tmp_path / "campplus.pt", arch="campplus_192"
    )
    ours_model = load_model(tmp_path / "campplus.pt")

    exp = load_experiment(
        base={"model": {"name": "3dspeaker/campplus_192"}, "task": {"name": "speaker"}},
        overrides={
            **voxray_overrides(RECIPE, STEPS_PER_EPOCH),
            # one batch per "epoch", so the loop's per-epoch report is the per-step loss
            "train.epochs": STEPS,
            "train.batch_size": BATCH,
            "train.precision": "fp32",
            "train.log_every": 1000,
            "task.config.num_classes": SPEAKERS,
        },
    )
    task = SpeakerTask(ours_model, resolve_task(exp.task.name, exp.task.config)[1])
    assert isinstance(task.head, AAMSoftmax) and task.head.fallback == "3dspeaker"
    loop = TrainLoop(task, exp, device=torch.device("cpu"), total_steps=STEPS)
    opt = loop.optimizers["main"]
    # ours <-> reference: the embedding model's names are the same; the head is the classifier
    ref_params = dict(ref_model.named_parameters()) | {"head.weight": ref.classifier.weight}
    our_params = {k: p for k, p in task.named_parameters()}
    pairs = [
        (our_params[("" if k == "head.weight" else "model.") + k], p) for k, p in ref_params.items()
    ]
    assert len(pairs) == len(list(task.parameters()))
    buffers = [(b, dict(ref_model.named_buffers())[k]) for k, b in ours_model.named_buffers()]

    def sync():
        """Ours := the reference (weights, BatchNorm statistics, momentum buffers)."""
        with torch.no_grad():
            for ours, theirs in pairs + buffers:
                ours.copy_(theirs)
            for ours, theirs in pairs:
                buf = ref.optimizer.state.get(theirs, {}).get("momentum_buffer")
                if buf is not None:
                    opt.state[ours]["momentum_buffer"] = buf.clone()

    ref_losses, our_losses, lrs, margins, before = [], [], [], [], []
    worst_update_error = 0.0

    def epoch_batches(epoch):
        sync()
        before[:] = [theirs.detach().clone() for _, theirs in pairs]
        feats, labels = fbank_batches[epoch]
        ref_losses.append(ref.step(epoch, feats.clone(), labels))
        lrs.append(ref.lr)
        margins.append(ref.margin)
        return [{"feats": feats.clone(), "label": labels}]

    def report(metrics, _ckpt):
        nonlocal worst_update_error
        our_losses.append(metrics["train_loss"])
        # our update against the reference's: the L1 norm of the difference over all weights,
        # relative to the L1 norm of the reference's update (single weights whose gradient is a
        # sum that cancels, e.g. a BatchNorm scale, carry relative float errors of ~1%)
        err = sum((o - t).abs().sum().item() for (o, t) in pairs)
        step = sum((t - b).abs().sum().item() for (_, t), b in zip(pairs, before, strict=True))
        worst_update_error = max(worst_update_error, err / step)

    sync()
    loop.run(epoch_batches, report=report)

    # the recipe's schedules are all exercised: warm-up from min_lr, cosine, the margin ramp
    assert lrs[0] == pytest.approx(RECIPE.min_lr) and max(lrs) == pytest.approx(RECIPE.lr)
    assert margins[14] == 0.0 and 0.0 < margins[20] < RECIPE.margin
    assert margins[-1] == RECIPE.margin
    assert len(our_losses) == len(ref_losses) == STEPS
    diffs = [abs(a - b) for a, b in zip(our_losses, ref_losses, strict=True)]
    print(
        f"\nstep parity over {STEPS} steps: max abs loss difference {max(diffs):.2e} "
        f"(losses {min(ref_losses):.2f}-{max(ref_losses):.2f}); worst weight update "
        f"difference {worst_update_error:.2e} of the update"
    )
    assert all(math.isfinite(x) for x in our_losses)
    assert max(diffs) < 1e-4, list(zip(our_losses, ref_losses, strict=True))
    assert worst_update_error < 1e-3


def test_aam_head_equals_arc_margin_loss_past_the_threshold():
    """Our AAM head + cross-entropy equals speakerlab's ``ArcMarginLoss`` on target cosines
    spread over [-1, 1], including the fallback region (theta + m > pi)."""
    torch.manual_seed(0)
    emb, classes = 16, 6
    for easy in (False, True):
        ours = AAMSoftmax(
            emb, classes, margin=0.5, scale=32.0, easy_margin=easy, fallback="3dspeaker"
        )
        ref = margin_loss.ArcMarginLoss(scale=32.0, margin=0.5, easy_margin=easy)
        labels = torch.arange(12) % classes
        # embeddings at chosen angles to their class weight: cos from -0.999 to 0.999
        w = torch.nn.functional.normalize(ours.weight.detach(), dim=-1)[labels]
        other = torch.nn.functional.normalize(torch.randn(12, emb), dim=-1)
        other = torch.nn.functional.normalize(other - (other * w).sum(-1, keepdim=True) * w, dim=-1)
        cos = torch.linspace(-0.999, 0.999, 12)[:, None]
        x = cos * w + (1 - cos**2).sqrt() * other
        assert (ours.cosine(x).gather(1, labels[:, None]) < math.cos(math.pi - 0.5)).any()
        ce = torch.nn.functional.cross_entropy(ours(x, labels), labels)
        assert ce.item() == pytest.approx(ref(ours.cosine(x), labels).item(), rel=1e-5)
    # the WeSpeaker fallback differs there (why the option exists)
    ws = AAMSoftmax(emb, classes, margin=0.5, scale=32.0)
    ws.weight.data.copy_(ours.weight.data)
    ref = margin_loss.ArcMarginLoss(scale=32.0, margin=0.5, easy_margin=False)
    ce = torch.nn.functional.cross_entropy(ws(x, labels), labels)
    assert ce.item() != pytest.approx(ref(ws.cosine(x), labels).item(), rel=1e-5)

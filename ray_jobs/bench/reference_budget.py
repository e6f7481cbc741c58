"""BENCHMARKS.md section: speakerlab's trainer and ours, same data, same CPU minutes.

Both train CAM++ (192) with the same recipe (``ray_jobs.compare_reference.trainer``: SGD
Nesterov, ``WarmupCosineScheduler``, exponential margin ramp, the schedule sized to two epochs)
on the same LibriSpeech speakers of ``../shared/data`` for the same wall-clock budget on the same
cores, one after the other:

- **speakerlab**: as its ``bin/train.py`` does: a plain ``torch.utils.data.DataLoader`` (one
  worker process) over the training utterances, a random 2-s crop per item and speakerlab's own
  ``FBank(80, mean_nor=True)``, into ``ReferenceTrainer`` (the package's model, classifier, loss,
  optimizer and schedulers), one torch thread;
- **voxray**: ``ray_jobs.train.job.run_training`` (Ray Data crops and fbank in CPU tasks, one
  Ray Train worker of 1 CPU), ``train.max_minutes`` the same budget.

Then both are scored on the same held-out speakers (the job's own split, 3-s segments) with the
same EER code (``ray_jobs.evaluate.speaker.evaluate_tree`` through ``SpeakerEmbedder``; the
reference's weights load into our ``3dspeaker/campplus_192`` preset, whose keys are identical).
Throughput: training samples per second of the budget. Uses Ray (through the training job).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from datasets.audio import crop_or_pad, load_audio
from datasets.manifests import scan_source, split_speakers
from datasets.ray_env import REPO_ROOT
from models.pipelines.speaker import SpeakerEmbedder
from models.registry import build_model
from ray_jobs.compare_reference.trainer import ReferenceRecipe, ReferenceTrainer, voxray_overrides
from ray_jobs.evaluate.speaker import evaluate_tree
from ray_jobs.train.experiment import load_experiment

log = logging.getLogger(__name__)

BATCH, CROP_S, CROPS_PER_UTT, VAL_SPEAKERS, SEGMENT_S = 32, 2.0, 8, 51, 3.0
RECIPE = ReferenceRecipe(
    num_epoch=2, warmup_epoch=0.2, margin_start_epoch=0.5, margin_fix_epoch=1.0
)


def speech_root() -> Path:
    base = Path(os.environ.get("VOXRAY_REAL_DATA", REPO_ROOT.parent / "shared" / "data"))
    return base / "speech" / "librispeech-train-clean-100"


class _CropDataset(torch.utils.data.Dataset):
    """speakerlab's WavSVDataset without its file reader (torchaudio 2.11 has no sox): a
    random ``CROP_S`` crop of one training utterance -> speakerlab ``FBank`` -> (feats, label)."""

    def __init__(self, paths: list[str], labels: list[int]) -> None:
        from speakerlab.process.processor import FBank

        self.paths, self.labels = paths, labels
        self.fbank = FBank(80, sample_rate=16000, mean_nor=True)

    def __len__(self) -> int:
        return len(self.paths) * CROPS_PER_UTT

    def __getitem__(self, i: int):
        k = i % len(self.paths)
        wav, _ = load_audio(self.paths[k], 16000)
        rng = np.random.default_rng(random.getrandbits(32))
        crop = torch.from_numpy(crop_or_pad(wav, int(CROP_S * 16000), rng))
        return self.fbank(crop), self.labels[k]


def train_reference(train_utts, minutes: float) -> tuple[torch.nn.Module, float, int]:
    """speakerlab's loop for ``minutes``: (trained embedding model, samples/s, steps)."""
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    speakers = sorted({u.speaker for u in train_utts})
    index = {s: i for i, s in enumerate(speakers)}
    data = _CropDataset([u.path for u in train_utts], [index[u.speaker] for u in train_utts])
    loader = torch.utils.data.DataLoader(
        data, batch_size=BATCH, shuffle=True, num_workers=1, drop_last=True
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = CAMPPlus(feat_dim=80, embedding_size=192)
        trainer = ReferenceTrainer(model, 192, len(speakers), RECIPE, len(loader))
        t0, step, samples = time.monotonic(), 0, 0
        done = False
        for _epoch in range(RECIPE.num_epoch):
            for feats, labels in loader:
                trainer.step(step, feats, labels)
                step += 1
                samples += len(labels)
                if time.monotonic() - t0 > minutes * 60:
                    done = True
                    break
            if done:
                break
        rate = samples / (time.monotonic() - t0)
    finally:
        torch.set_num_threads(threads)
    return model.eval(), rate, step


def section_reference_budget(quick: bool, notes: list[str], minutes: float = 3.0) -> str | None:
    """Train both for ``minutes`` each and score them; None with a note when not possible."""
    root = speech_root()
    if quick:
        notes.append("Same-budget training against speakerlab: skipped in --quick mode.")
        return None
    if not root.is_dir():
        notes.append(f"Same-budget training against speakerlab: {root} not found.")
        return None
    if importlib.util.find_spec("speakerlab") is None:
        notes.append("Same-budget training against speakerlab: speakerlab is not installed.")
        return None
    from ray_jobs.train.job import run_training  # Ray: only when this section runs

    out = Path(tempfile.mkdtemp(prefix="voxray-refbudget-"))
    utts = scan_source(root, "librispeech")
    train_utts, _ = split_speakers(utts, VAL_SPEAKERS, seed=0)
    steps_per_epoch = len(train_utts) * CROPS_PER_UTT // BATCH
    exp = load_experiment(
        base={"model": {"name": "3dspeaker/campplus_192"}, "task": {"name": "speaker"}},
        overrides={
            **voxray_overrides(RECIPE, steps_per_epoch),
            "data.train": str(root),
            "data.layout": "librispeech",
            "data.val_speakers": VAL_SPEAKERS,
            "data.val_segment_seconds": SEGMENT_S,
            "data.crop_seconds": CROP_S,
            "data.crops_per_utterance": CROPS_PER_UTT,
            "data.seed": 0,
            "data.fbank.dither": 0.0,
            "data.augment.noise_prob": 0.0,
            "data.augment.reverb_prob": 0.0,
            "data.augment.specaug": False,
            "data.augment.speed_factors": [1.0],
            "train.batch_size": BATCH,
            "train.num_workers": 1,
            "train.cpus_per_worker": 1.0,
            "train.precision": "fp32",
            "train.max_minutes": minutes,
            "train.log_every": 10,
        },
    )
    log.info("same budget: voxray (Ray Data + Ray Train) for %.1f min", minutes)
    report = run_training(exp, out / "voxray")
    ours_steps = int(report["train_metrics"].get("step", 0))
    ours_rate = ours_steps * BATCH / (minutes * 60)
    ours_eval = report["eval"]

    log.info("same budget: speakerlab's loop for %.1f min", minutes)
    ref_model, ref_rate, ref_steps = train_reference(train_utts, minutes)
    ours_arch = build_model("3dspeaker/campplus_192")
    ours_arch.load_state_dict(ref_model.state_dict(), strict=True)
    val_utts = _val_segments(out / "voxray")
    ref_eval = evaluate_tree(SpeakerEmbedder(ours_arch), val_utts)
    lines = [
        "## Same budget as 3D-Speaker's trainer",
        "",
        f"CAM++ (192) trained for {minutes:g} min each on the same {len(train_utts)} LibriSpeech "
        f"speakers of `../shared/data` (2-s crops, batch {BATCH}, no augmentation, cam++.yaml's "
        "optimizer and schedules sized to 2 epochs), one after the other on the same cores, "
        f"then scored on the same {ours_eval['num_trials']} trials of the {VAL_SPEAKERS} held-out "
        "speakers (3-s segments of one recording each: same-session trials) with the same EER "
        "code. speakerlab: its components with a torch DataLoader (1 worker) and its FBank, 1 "
        "torch thread; voxray: `ray_jobs.train` (Ray Data, one 1-CPU Ray Train worker). "
        "samples/s over the whole budget (first batches included). "
        "(`ray_jobs/bench/reference_budget.py`)",
        "",
        "| trainer | steps | samples/s | EER % | minDCF 0.01 |",
        "|---|---|---|---|---|",
        f"| speakerlab 0.0.6 | {ref_steps} | {ref_rate:.2f} | {100 * ref_eval['eer']:.2f} "
        f"| {ref_eval.get('min_dcf_0.01', float('nan')):.3f} |",
        f"| voxray | {ours_steps} | {ours_rate:.2f} | {100 * ours_eval['eer']:.2f} "
        f"| {ours_eval.get('min_dcf_0.01', float('nan')):.3f} |",
    ]
    return "\n".join(lines)


def _val_segments(run_dir: Path):
    """The held-out segments the training job scored (its own split and segmentation)."""
    from ray_jobs.train.prepare import prepare_speaker_data

    exp_data = load_experiment(
        base={"model": {"name": "3dspeaker/campplus_192"}, "task": {"name": "speaker"}},
        overrides={
            "data.train": str(speech_root()),
            "data.layout": "librispeech",
            "data.val_speakers": VAL_SPEAKERS,
            "data.val_segment_seconds": SEGMENT_S,
            "data.seed": 0,
        },
    ).data
    return prepare_speaker_data(exp_data, run_dir).val_utterances

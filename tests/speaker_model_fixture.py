"""A small speaker-embedding model trained in the test session, Ray-free, in about a minute.

Trains the ``ecapa_tdnn-tiny`` preset with the ``speaker`` task (AAM-softmax head) on random 1.5 s
crops of the 251 LibriSpeech train-clean-100 speakers in the shared real data (one file per
speaker; speaker id = file-name prefix before the first '-'), with a plain seeded AdamW loop.
The diarization sample's speakers are not LibriSpeech speakers, so they are never seen in
training. Fbank features are computed once per file and cropped (1.5 s = 150 frames; the
per-utterance mean normalisation is applied to each crop, as the front end does at inference).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

sys.modules.setdefault("ray", None)

from models import build_model  # noqa: E402
from models.checkpoint import save_checkpoint  # noqa: E402
from models.features import Fbank, FbankConfig  # noqa: E402
from models.registry import resolve_task  # noqa: E402

LIBRISPEECH = Path("speech") / "librispeech-train-clean-100"
PRESET = "ecapa_tdnn-tiny"
MODEL_OVERRIDES = {"feat_dim": 40}  # 40 mel bins: half the first layer's cost, enough here
STEPS = 400


def _speaker_feats(
    root: Path, feat_dim: int, max_seconds: float
) -> tuple[list[torch.Tensor], list[str]]:
    fbank = Fbank(FbankConfig(num_mel_bins=feat_dim, mean_norm=False))
    feats, speakers = [], []
    for path in sorted(root.glob("*.flac")):
        wav, sr = sf.read(path, frames=int(max_seconds * 16000), dtype="float32")
        if sr != 16000:
            raise ValueError(f"{path} is {sr} Hz; LibriSpeech is 16 kHz")
        with torch.inference_mode():
            feats.append(fbank(torch.from_numpy(wav))[0].clone())  # (T, F)
        speakers.append(path.name.split("-")[0])
    return feats, speakers


def train_small_speaker_model(
    real_data: Path,
    out: Path,
    steps: int = STEPS,
    seed: int = 0,
    batch_size: int = 32,
    crop_frames: int = 150,
    max_seconds: float = 8.0,
) -> Path:
    """Train ``ecapa_tdnn-tiny`` (40 mel bins) for ``steps`` AdamW steps of ``batch_size`` random
    ``crop_frames`` crops (10 ms frames) from the first ``max_seconds`` of each speaker's file;
    returns the saved checkpoint path."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(PRESET, MODEL_OVERRIDES)
    feat_dim = model.cfg.feat_dim
    feats, speakers = _speaker_feats(Path(real_data) / LIBRISPEECH, feat_dim, max_seconds)
    classes = sorted(set(speakers))
    label_of = {s: i for i, s in enumerate(classes)}
    labels = torch.tensor([label_of[s] for s in speakers])
    entry, task_cfg = resolve_task(
        "speaker",
        {
            "num_classes": len(classes),
            "head": {"margin": 0.2, "scale": 30.0, "margin_warmup_steps": steps // 4},
        },
    )
    task = entry.cls(model, task_cfg)
    task.train()
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    crop = crop_frames
    for step in range(steps):
        task.on_step(step)
        idx = rng.integers(0, len(feats), batch_size)
        batch = []
        for i in idx:
            f = feats[i]
            a = int(rng.integers(0, max(1, f.shape[0] - crop + 1)))
            c = f[a : a + crop]
            if c.shape[0] < crop:  # rare short file: repeat to the crop length
                c = c.repeat(crop // c.shape[0] + 1, 1)[:crop]
            batch.append(c - c.mean(dim=0, keepdim=True))  # CMN per crop, as at inference
        out_d = task({"feats": torch.stack(batch), "label": labels[torch.from_numpy(idx)]})
        opt.zero_grad(set_to_none=True)
        out_d["loss"].backward()
        opt.step()
        sched.step()
    model.eval()
    return save_checkpoint(model, out, meta={"steps": steps, "seed": seed, "data": "librispeech"})


@pytest.fixture(scope="session")
def small_speaker_checkpoint(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-cached checkpoint of :func:`train_small_speaker_model` (seed 0)."""
    out = tmp_path_factory.mktemp("speaker_model") / "ecapa_tiny_librispeech.pt"
    return train_small_speaker_model(real_data, out, steps=STEPS, seed=0)

"""Ray-free transforms of the speaker-training data pipeline.

``datasets/ray_data.py`` runs these as Ray Data operators; tests and the single-process path call
them directly. Rows are plain dicts of numpy values so they cross Ray's object store cheaply.

- ``crop_task``: one read task of a :class:`~datasets.shard_order.ReadPlan` (a random sample of
  the packed corpus, different every epoch) -> random fixed-length crops with speaker labels
  (speed perturbation applied before cropping, each factor a new label as in
  3D-Speaker/WeSpeaker);
- ``featurize_batch``: a batch of crops -> additive noise / reverberation -> Kaldi fbank ->
  SpecAugment, i.e. ``{"feats": (B, T, n_mels) float32, "label": (B,) int64}``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from datasets.audio import crop_or_pad
from datasets.augment import (
    AugmentConfig,
    Augmenter,
    speed_label,
    speed_perturb,
)
from datasets.banks import open_bank
from datasets.shard_order import ReadPlan, read_task
from models.features import Fbank, FbankConfig


@dataclass(frozen=True)
class CropSpec:
    speakers: tuple[str, ...]  # sorted training speakers; label = index (x speed factor)
    crop_seconds: float = 2.0
    crops_per_utterance: int = 1  # the read plan's repeats: each crop is read in its own place
    sample_rate: int = 16000
    speed_factors: tuple[float, ...] = (1.0,)  # first must be 1.0 (unperturbed labels)
    speed_perturb: bool = True  # False: the factors' label space, but only unperturbed crops
    seed: int | None = None  # None: fresh entropy per read task (training); int: reproducible

    def __post_init__(self) -> None:
        if not self.speed_factors or self.speed_factors[0] != 1.0:
            raise ValueError(f"speed_factors must start with 1.0, got {self.speed_factors}")

    @property
    def num_classes(self) -> int:
        return len(self.speakers) * len(self.speed_factors)


@dataclass(frozen=True)
class FeatureSpec:
    fbank: FbankConfig = field(default_factory=FbankConfig)
    augment: AugmentConfig | None = None  # None: no waveform/SpecAugment augmentation
    noise: str = ""  # noise folder or packed manifest ("" = no additive noise)
    rir: str = ""  # RIR folder or packed manifest ("" = no reverberation)
    seed: int | None = None


def _rng(seed: int | None, *salt: object) -> np.random.Generator:
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, *(abs(hash(s)) % (2**32) for s in salt)])


def crop_task(row: dict, spec: CropSpec, plan: ReadPlan, offset: int = 0) -> Iterator[dict]:
    """``{"id": i}`` -> rows ``{"audio": (N,) float32, "label": int}`` of read task ``j % T``
    of epoch ``j // T`` (``j = i + offset``, ``T = plan.num_tasks``), one crop per planned row."""
    epoch, task = divmod(int(row["id"]) + offset, plan.num_tasks)
    index = {spk: i for i, spk in enumerate(spec.speakers)}
    num = int(round(spec.crop_seconds * spec.sample_rate))
    rng = _rng(spec.seed, epoch, task)
    for utt in read_task(plan, epoch, task):
        label = index.get(utt["speaker"])
        if label is None:  # not a training speaker (e.g. held out)
            continue
        if utt["sample_rate"] != spec.sample_rate:
            raise ValueError(
                f"{utt['shard']} is packed at {utt['sample_rate']} Hz but training expects "
                f"{spec.sample_rate} Hz; repack with --sample-rate {spec.sample_rate}"
            )
        k = int(rng.integers(len(spec.speed_factors))) if spec.speed_perturb else 0
        wav = utt["audio"]
        if spec.speed_factors[k] != 1.0:
            wav = speed_perturb(wav, spec.speed_factors[k])
        yield {
            "audio": crop_or_pad(wav, num, rng).astype(np.float32),
            "label": speed_label(label, k, len(spec.speakers)),
        }


@functools.lru_cache(maxsize=8)
def _augmenter(cfg: AugmentConfig, noise: str, rir: str, sample_rate: int) -> Augmenter:
    # Opened once per worker process and reused by every batch it featurizes; a packed bank
    # is read on demand (datasets.banks), so the worker never holds it whole.
    noises = open_bank(noise, sample_rate) if noise else None
    rirs = open_bank(rir, sample_rate) if rir else None
    return Augmenter(cfg, noises, rirs)


@functools.lru_cache(maxsize=4)
def _fbank(cfg: FbankConfig) -> Fbank:
    return Fbank(cfg)


def featurize_batch(batch: dict[str, np.ndarray], spec: FeatureSpec) -> dict[str, np.ndarray]:
    """``{"audio": (B, N), "label": (B,)}`` -> ``{"feats": (B, T, F), "label": (B,)}``."""
    audio = np.asarray(batch["audio"], dtype=np.float32)
    if audio.ndim != 2:
        audio = np.stack(list(audio))
    rng = _rng(spec.seed, audio.shape, float(audio[:, :64].sum()))
    aug = None
    if spec.augment is not None:
        aug = _augmenter(spec.augment, spec.noise, spec.rir, spec.fbank.sample_rate)
        audio = np.stack([aug(w, rng) for w in audio]).astype(np.float32)
    with torch.no_grad():
        feats = _fbank(spec.fbank)(torch.from_numpy(audio))  # (B, T, F)
        if aug is not None:
            feats = aug.spec_augment(feats, rng)
    return {
        "feats": feats.numpy().astype(np.float32),
        "label": np.asarray(batch["label"], dtype=np.int64),
    }

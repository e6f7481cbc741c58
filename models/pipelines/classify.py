"""Sound-event classification facade used by jobs and Serve: waveform in, top-k labels out.

Wraps a registered ``classify``-family model (ACDNet, Mohaimenuzzaman et al., Pattern
Recognition 2023, arXiv 2103.03483) with its input rate and the paper's test-time protocol from
the reference implementation (mohaimenz/acdnet ``common/val_generator.py``, ``torch/trainer.py``;
read for understanding):

1. resample to the model's rate (20 kHz) and mix down to mono;
2. trim leading/trailing exact zeros (the training clips were trimmed the same way);
3. zero-pad ``input_length // 2`` samples on both sides, so a clip shorter than the model's
   input (1.51 s) is padded with silence rather than rejected;
4. take ``n_crops`` (10) evenly spaced ``input_length`` crops and average their softmax outputs.

It takes waveforms plus a sample rate, never paths (decoding files is ``datasets/audio.py``'s
job). Empty, non-finite, silent or too-short (< ``min_seconds``) input raises
``models.waveform.AudioError``, the one bad-audio exception.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from models.registry import get_entry
from models.waveform import AudioError, mono_float32, resample


def trim_zeros(wav: torch.Tensor) -> torch.Tensor:
    """Drop leading/trailing exact zeros of ``(T,)``; all-zero input comes back unchanged."""
    nz = torch.nonzero(wav).flatten()
    return wav if nz.numel() == 0 else wav[int(nz[0]) : int(nz[-1]) + 1]


def multi_crop(wav: torch.Tensor, input_length: int, n_crops: int) -> torch.Tensor:
    """``(T,)`` -> ``(n_crops, input_length)``: pad ``input_length // 2`` zeros each side, then
    evenly spaced crops (crop ``i`` starts at ``i * ((len - input_length) // (n_crops - 1))``)."""
    half = input_length // 2
    x = torch.nn.functional.pad(wav, (half, half))
    if x.shape[0] < input_length:
        x = torch.nn.functional.pad(x, (0, input_length - x.shape[0]))
    stride = (x.shape[0] - input_length) // max(1, n_crops - 1)
    return torch.stack([x[i * stride : i * stride + input_length] for i in range(n_crops)])


class SoundClassifier:
    """``SoundClassifier(model, classes)(wav, sample_rate, top_k=5) -> [(label, prob), ...]``.

    ``model`` maps ``(B, input_length)`` float at ``model.cfg.sample_rate`` to ``(B, C)`` logits.
    ``classes`` names the C outputs (default: ``"0"`` .. ``"C-1"``).
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Sequence[str] | None = None,
        *,
        n_crops: int = 10,
        min_seconds: float = 0.05,
        max_batch_crops: int = 160,
    ) -> None:
        cfg = getattr(model, "cfg", None)
        for attr in ("sample_rate", "input_length", "num_classes"):
            if not hasattr(cfg, attr):
                raise TypeError(f"{type(model).__name__}.cfg has no {attr}; not a classifier")
        if n_crops < 1 or max_batch_crops < 1:
            raise ValueError("n_crops and max_batch_crops must be >= 1")
        self.model = model.eval()
        self.sample_rate = int(cfg.sample_rate)
        self.input_length = int(cfg.input_length)
        n = int(cfg.num_classes)
        self.classes = [str(i) for i in range(n)] if classes is None else [str(c) for c in classes]
        if len(self.classes) != n:
            raise ValueError(f"{len(self.classes)} class names for a model with {n} outputs")
        self.n_crops = int(n_crops)
        self.min_seconds = float(min_seconds)
        self.max_batch_crops = int(max_batch_crops)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs) -> SoundClassifier:
        """Load a voxray checkpoint (the same reading as ``models.checkpoint.load_model``) whose
        model is in the ``classify`` family; class names from ``meta["classes"]`` if present."""
        ckpt = read_checkpoint(path)
        family = get_entry(ckpt["model_name"]).family
        if family != "classify":
            raise CheckpointError(
                f"{path} holds a {family!r} model ({ckpt['model_name']}); SoundClassifier needs "
                "a classify-family checkpoint such as acdnet"
            )
        classes = ckpt.get("meta", {}).get("classes")
        return cls(model_from_checkpoint(ckpt), classes, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prepare(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Validate, mix down, resample, trim and crop -> ``(n_crops, input_length)``."""
        x = mono_float32(wav, sample_rate, mix_down=True)
        if x.numel() / sample_rate < self.min_seconds:
            raise AudioError(
                f"{x.numel() / sample_rate:.3f} s of audio is shorter than the "
                f"{self.min_seconds:g} s needed; send a longer clip (shorter than "
                f"{self.input_length / self.sample_rate:.2f} s is fine: it is zero-padded)"
            )
        if x.abs().max() < 1e-6:
            raise AudioError("the waveform is silent (all samples ~0); nothing to classify")
        if sample_rate != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        return multi_crop(trim_zeros(x), self.input_length, self.n_crops)

    @torch.no_grad()
    def predict_proba(
        self, wavs: Sequence[np.ndarray | torch.Tensor], sample_rate: int
    ) -> torch.Tensor:
        """Clips -> ``(N, C)`` class probabilities, averaged over each clip's crops."""
        crops = torch.cat([self._prepare(w, sample_rate) for w in wavs])  # (N*K, L)
        probs = []
        for i in range(0, crops.shape[0], self.max_batch_crops):
            logits = self.model(crops[i : i + self.max_batch_crops].to(self.device))
            probs.append(logits.float().softmax(-1).cpu())
        return torch.cat(probs).reshape(len(wavs), self.n_crops, -1).mean(1)

    def classify_batch(
        self, wavs: Sequence[np.ndarray | torch.Tensor], sample_rate: int, top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """Per clip, the ``top_k`` ``(label, probability)`` pairs, most probable first."""
        if not len(wavs):
            return []
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        probs = self.predict_proba(wavs, sample_rate)
        vals, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            [(self.classes[int(i)], float(v)) for v, i in zip(vr, ir, strict=True)]
            for vr, ir in zip(vals, idx, strict=True)
        ]

    def __call__(
        self, wav: np.ndarray | torch.Tensor, sample_rate: int, top_k: int = 5
    ) -> list[tuple[str, float]]:
        """One clip ``(T,)`` (or ``(C, T)``) float at ``sample_rate`` -> top-k ``(label, prob)``."""
        return self.classify_batch([wav], sample_rate, top_k)[0]

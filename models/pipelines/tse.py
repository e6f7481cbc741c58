"""Long-file target speaker extraction: any-length mixture + enrolment in, target speech out.

The model (``models/tse/extractor.py``) sees fixed-length chunks; this facade does what it must
not know about, following pyannote's ``Inference`` (``pyannote/audio/core/inference.py``:
sliding windows applied apart from the model) and torchaudio's pipeline bundles (model +
sample rate in one object):

1. inputs are validated (``AudioError``) and resampled to the model's rate (48 kHz,
   ``models.waveform.resample``, polyphase);
2. the reference is encoded ONCE (``encode_reference``) and the encoding is broadcast to every
   batch of chunks (``forward_with_reference``);
3. chunks of ``chunk_seconds`` overlap by ``overlap_seconds``; chunk outputs are cross-faded with
   linear ramps over the overlap and the sum is divided by the sum of the windows, so a constant
   signal keeps a constant gain everywhere, ends included, whatever the last chunk's overlap;
4. the output has exactly the length of the (resampled) mixture.

It takes waveforms plus a sample rate, never paths (decoding files is ``datasets/audio.py``'s job).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from models.checkpoint import load_model
from models.waveform import AudioError, mono_float32, resample

log = logging.getLogger(__name__)

MIN_REFERENCE_SECONDS = 0.5


def _as_mono(wav: np.ndarray | torch.Tensor, sample_rate: int, what: str) -> np.ndarray:
    try:
        return mono_float32(wav, sample_rate).numpy()
    except AudioError as exc:
        raise AudioError(f"{what}: {exc}") from None


def chunk_starts(length: int, chunk: int, hop: int) -> list[int]:
    """Starts of ``chunk``-sample windows every ``hop`` samples covering ``[0, length)``; the last
    window is aligned to the end (no padding). One window of ``length`` when it fits in one."""
    if length <= chunk:
        return [0]
    starts = list(range(0, length - chunk, hop))
    starts.append(length - chunk)
    return starts


def crossfade_window(chunk: int, overlap: int) -> np.ndarray:
    """``(chunk,)`` weights: linear ramps over ``overlap`` samples at both ends, 1 in between.
    Ramps start above 0 (``(k + 0.5) / overlap``), so every sample has a positive total weight
    and two ramps overlapping by ``overlap`` sum to exactly 1."""
    w = np.ones(chunk, dtype=np.float64)
    if overlap > 0:
        ramp = (np.arange(overlap) + 0.5) / overlap
        w[:overlap] = ramp
        w[chunk - overlap :] = np.minimum(w[chunk - overlap :], ramp[::-1])
    return w


class TargetExtractor:
    """``__call__(mix, mix_sr, ref, ref_sr) -> (T',) float32`` target speech at
    ``sample_rate`` (48 kHz for the TSE presets), ``T'`` = length of the mixture resampled to
    that rate (the input length when ``mix_sr == sample_rate``).

    ``model``: a ``tse``-family extractor with ``encode_reference`` / ``forward_with_reference``;
    it is put in eval mode on ``device``. ``batch_size`` chunks go through the model at once.
    """

    def __init__(
        self, model: nn.Module, *, device: str | torch.device = "cpu", batch_size: int = 4
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, device: str | torch.device = "cpu", batch_size: int = 4
    ) -> TargetExtractor:
        return cls(load_model(path), device=device, batch_size=batch_size)

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.sample_rate)

    def __call__(
        self,
        mix: np.ndarray | torch.Tensor,
        mix_sr: int,
        ref: np.ndarray | torch.Tensor,
        ref_sr: int,
        *,
        chunk_seconds: float = 4.0,
        overlap_seconds: float = 1.0,
    ) -> np.ndarray:
        """Extract the speaker of ``ref`` (mono, ``ref_sr`` Hz, >= 0.5 s) from ``mix`` (mono,
        ``mix_sr`` Hz). Raises ``AudioError`` for unusable audio and ``ValueError`` for
        ``overlap_seconds`` outside ``[0, chunk_seconds / 2]``."""
        sr = self.sample_rate
        if not chunk_seconds > 0 or not 0 <= overlap_seconds <= chunk_seconds / 2:
            raise ValueError(
                f"need chunk_seconds > 0 and 0 <= overlap_seconds <= chunk_seconds / 2, got "
                f"{chunk_seconds} and {overlap_seconds}"
            )
        x = _as_mono(mix, mix_sr, "mixture")
        r = _as_mono(ref, ref_sr, "reference")
        if r.size / ref_sr < MIN_REFERENCE_SECONDS:
            raise AudioError(
                f"reference is {r.size / ref_sr:.3f} s long; give at least "
                f"{MIN_REFERENCE_SECONDS:g} s of the target speaker alone"
            )
        if not np.any(r):
            raise AudioError("reference is digital silence; give speech of the target")
        x = resample(x, int(mix_sr), sr)
        r = resample(r, int(ref_sr), sr)
        chunk = max(1, round(chunk_seconds * sr))
        overlap = round(overlap_seconds * sr)
        length = x.shape[0]
        starts = chunk_starts(length, chunk, chunk - overlap)
        size = min(chunk, length)
        window = crossfade_window(size, overlap if len(starts) > 1 else 0)
        out = np.zeros(length, dtype=np.float64)
        norm = np.zeros(length, dtype=np.float64)
        with torch.inference_mode():
            encoding = self.model.encode_reference(torch.from_numpy(r)[None].to(self.device))
            for i in range(0, len(starts), self.batch_size):
                group = starts[i : i + self.batch_size]
                batch = torch.from_numpy(np.stack([x[s : s + size] for s in group]))  # (b, size)
                y = self.model.forward_with_reference(batch.to(self.device), encoding).audio
                y = y.float().cpu().numpy()
                for s, row in zip(group, y, strict=True):
                    out[s : s + size] += window * row
                    norm[s : s + size] += window
        log.debug("extracted %d samples in %d chunks of %d", length, len(starts), size)
        return (out / norm).astype(np.float32)

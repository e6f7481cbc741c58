"""Checking the waveforms the pipelines are given (shared by the embedder, codec and extractor).

Pipelines take waveforms, never paths; what a caller can get wrong about a waveform (shape,
dtype, rate, emptiness, NaNs) is checked here once, with messages that say what to change.
"""

from __future__ import annotations

import numpy as np
import torch


class AudioInputError(ValueError):
    """A waveform a pipeline cannot use (empty, too short, wrong shape, not finite)."""


def mono_float32(wav: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(T,)`` or ``(1, T)`` float (or int16 PCM) audio -> a ``(T,)`` float32 CPU tensor copy.

    int16 is scaled to [-1, 1], the scale the models were trained on. Raises
    :class:`AudioInputError` for other shapes or dtypes, a non-positive or non-integer rate, an
    empty waveform or non-finite samples.
    """
    x = wav.detach().cpu() if isinstance(wav, torch.Tensor) else torch.tensor(np.asarray(wav))
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise AudioInputError(
            f"expected a mono waveform of shape (T,), got {tuple(x.shape)}; mix down first"
        )
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif not x.is_floating_point():
        raise AudioInputError(f"waveform dtype {x.dtype} is not float (or int16 PCM) audio")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioInputError(f"sample rate must be a positive integer, got {sample_rate}")
    if x.numel() == 0:
        raise AudioInputError("empty waveform")
    if not torch.isfinite(x).all():
        raise AudioInputError("waveform contains NaN or infinite samples")
    return x.to(torch.float32)

"""Waveforms in memory: the one bad-audio exception, the one waveform check, the one resampler.

Everything above ``models/`` hands waveforms around as ``(T,)`` float arrays plus a sample rate
(decoding files is ``datasets/audio.py``'s job). What a caller can get wrong about such a
waveform (shape, dtype, rate, emptiness, NaNs) is checked here once, by :func:`mono_float32`, and
every problem with audio a user sent, from a file that will not decode
(``datasets.audio``) to a clip too short for a model (``models/pipelines``), raises
:class:`AudioError`, so a caller catches one type and shows its message.

Resampling is polyphase (``scipy.signal.resample_poly``, Kaiser window), the same family as
torchaudio's sinc resampler and exact for rational rate ratios such as 8 kHz -> 16 kHz or
44.1 kHz -> 16 kHz. Its cost grows with the reduced ratio's terms (the filter has about
``20 x max(up, down)`` taps), so a ratio whose terms pass ``MAX_POLYPHASE`` (e.g. 191,999 Hz ->
16 kHz: 16,000 / 191,999) is replaced by the nearest ratio with terms under it (a rate error
of a few parts per million, inaudible) and the output cut or padded to the exact length: a hostile
sample rate cannot make resampling cost seconds and a gigabyte.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TypeVar

import numpy as np
import torch
from scipy.signal import resample_poly

# Largest term of the rate ratio resampled exactly (44.1 kHz <-> 16 kHz is 160 / 441).
MAX_POLYPHASE = 2048

Wave = TypeVar("Wave", np.ndarray, torch.Tensor)


class AudioError(ValueError):
    """Audio a user sent that cannot be used: undecodable, empty, too short, wrong shape, not
    finite. The message says what is wrong and what to do about it."""


def mono_float32(
    wav: np.ndarray | torch.Tensor,
    sample_rate: int,
    *,
    mix_down: bool = False,
    allow_empty: bool = False,
) -> torch.Tensor:
    """``(T,)`` or ``(1, T)`` float (or int16 PCM) audio -> a ``(T,)`` float32 CPU tensor copy.

    int16 is scaled to [-1, 1], the scale the models were trained on. ``mix_down`` also accepts
    ``(C, T)`` and averages the channels; ``allow_empty`` lets a zero-length waveform through
    (for callers where "no audio" has an answer, such as VAD). Raises :class:`AudioError` for
    other shapes or dtypes, a non-positive or non-integer rate, an empty waveform or non-finite
    samples.
    """
    x = wav.detach().cpu() if isinstance(wav, torch.Tensor) else torch.tensor(np.asarray(wav))
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    elif not x.is_floating_point():
        raise AudioError(f"waveform dtype {x.dtype} is not float (or int16 PCM) audio")
    if x.dim() == 2 and (x.shape[0] == 1 or mix_down):
        x = x.mean(0)  # (C, T) -> (T,)
    if x.dim() != 1:
        want = "(T,) or (C, T) waveform" if mix_down else "mono waveform of shape (T,)"
        hint = "" if mix_down else "; mix down first"
        raise AudioError(f"expected a {want}, got {tuple(x.shape)}{hint}")
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate}")
    if x.numel() == 0 and not allow_empty:
        raise AudioError("empty waveform; send audio samples")
    if not torch.isfinite(x).all():
        raise AudioError("waveform contains NaN or infinite samples")
    return x.to(torch.float32)


def resample(wav: Wave, orig_sr: int, target_sr: int) -> Wave:
    """Polyphase resampling along the last axis; output length ``ceil(T * target / orig)``.

    ``wav``: ``(T,)`` or ``(C, T)`` float, a numpy array or a tensor; returns the same kind as
    float32 (a tensor on its original device). Values are not clipped: the anti-alias filter can
    overshoot full-scale input slightly, and whoever writes 16-bit PCM clips
    (``datasets.audio``).
    """
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if isinstance(wav, torch.Tensor):
        out = resample(wav.detach().cpu().float().numpy(), orig_sr, target_sr)
        return torch.from_numpy(out).to(wav.device)
    x = np.asarray(wav, dtype=np.float32)
    if orig_sr == target_sr:
        return x.copy()
    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    if max(up, down) <= MAX_POLYPHASE:
        return resample_poly(x, up, down, axis=-1).astype(np.float32, copy=False)
    # an awkward ratio: the nearest one with small terms, then the exact output length
    ratio = Fraction(up, down)
    near = (
        ratio.limit_denominator(MAX_POLYPHASE)
        if up <= down
        else 1 / (1 / ratio).limit_denominator(MAX_POLYPHASE)
    )
    near = near or Fraction(1, MAX_POLYPHASE)  # ratios below 1/2048 round to 0
    out = resample_poly(x, near.numerator, near.denominator, axis=-1)
    n = -(-x.shape[-1] * up // down)  # ceil(T * target / orig)
    if out.shape[-1] >= n:
        out = out[..., :n]
    else:
        out = np.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, n - out.shape[-1])], mode="edge")
    return out.astype(np.float32, copy=False)

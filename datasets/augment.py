"""Waveform and feature augmentation for speaker training: noise, reverberation, speed, SpecAugment.

Follows the recipes of WeSpeaker (``wespeaker/dataset/processor.py``: MUSAN noise at a random
SNR, RIR convolution, speed perturbation whose perturbed copies become new speaker classes) and
3D-Speaker, and SpecAugment (Park et al., 2019, "SpecAugment: A Simple Data Augmentation Method
for Automatic Speech Recognition") on the fbank features. Waveform ops are numpy; every random
choice comes from an explicit ``np.random.Generator`` so a seed reproduces a batch exactly.

Speed perturbation as new speakers: a voice played at 0.9x or 1.1x speed has a shifted pitch and
formants, so (as in Kaldi's VoxCeleb recipe and WeSpeaker) the perturbed copy of speaker ``s`` gets
label ``s + i * num_speakers`` where ``i`` indexes the speed factor; factor index 0 is always
speed 1.0, so unperturbed labels are unchanged and a model trained with 3 factors simply has
``3 * num_speakers`` classes. See :func:`speed_label`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from scipy.signal import fftconvolve

from datasets.audio import crop_or_pad
from datasets.banks import Bank, as_bank
from models.waveform import resample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentConfig:
    noise_prob: float = 0.6  # chance of adding one background noise from the noise bank
    snr_db: tuple[float, float] = (0.0, 15.0)  # SNR drawn uniformly from [low, high] dB
    reverb_prob: float = 0.3  # chance of convolving with one RIR from the RIR bank
    # Speed factors, each a new set of speaker classes; must contain 1.0 (e.g. [0.9, 1.0, 1.1]).
    # Internally 1.0 comes first (see ordered_speed_factors) so factor index 0 is "unperturbed".
    speed_factors: tuple[float, ...] = (1.0,)
    # False keeps the speed factors' label space (the head's classes) but draws no perturbed
    # copies: large-margin fine-tuning continues a head trained with speed classes on unperturbed
    # audio, as WeSpeaker's LM stage does.
    speed_perturb: bool = True
    specaug: bool = True  # SpecAugment on the fbank features (training only)
    freq_masks: int = 2  # number of frequency masks per utterance
    freq_mask_width: int = 10  # each frequency mask covers 0..this many bins
    time_masks: int = 2  # number of time masks per utterance
    time_mask_width: int = 20  # each time mask covers 0..this many frames

    def __post_init__(self) -> None:
        for name in ("noise_prob", "reverb_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        lo, hi = self.snr_db
        if lo > hi:
            raise ValueError(f"snr_db must be (low, high) with low <= high, got {self.snr_db}")
        if not self.speed_factors or any(f <= 0 for f in self.speed_factors):
            raise ValueError(f"speed_factors must be positive, got {self.speed_factors}")
        if 1.0 not in self.speed_factors or len(set(self.speed_factors)) != len(self.speed_factors):
            raise ValueError(
                f"speed_factors must contain 1.0 once and no duplicates, got {self.speed_factors}"
            )
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def ordered_speed_factors(self) -> tuple[float, ...]:
        """``speed_factors`` with 1.0 first, the rest in the given order: index -> factor."""
        return (1.0,) + tuple(f for f in self.speed_factors if f != 1.0)


def speed_label(label: int, factor_index: int, num_speakers: int) -> int:
    """Class label of speaker ``label`` perturbed by speed factor ``factor_index``.

    ``label + factor_index * num_speakers``: index 0 (speed 1.0) keeps the original labels, and
    with ``K`` factors the classifier needs ``K * num_speakers`` classes.
    """
    if not 0 <= label < num_speakers:
        raise ValueError(f"label {label} is outside [0, {num_speakers})")
    if factor_index < 0:
        raise ValueError(f"factor_index must be >= 0, got {factor_index}")
    return label + factor_index * num_speakers


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def _avoid_clipping(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x / peak * 0.99 if peak > 0.99 else x  # scaling keeps the SNR; clipping would not


def add_noise(
    wav: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Mix ``noise`` into ``wav: (T,)`` at ``snr_db`` (powers over the whole utterance).

    The noise is cropped at a random offset (or repeated when shorter) to ``len(wav)``. The
    mixture is scaled down as a whole if it would clip. Silent noise returns ``wav`` unchanged.
    """
    wav = np.asarray(wav, dtype=np.float32)
    seg = crop_or_pad(np.asarray(noise, dtype=np.float32), wav.shape[-1], rng)
    p_speech, p_noise = _power(wav), _power(seg)
    if p_noise <= 0.0 or p_speech <= 0.0:
        return wav.copy()
    gain = np.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return _avoid_clipping(wav + gain * seg).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``wav: (T,)`` with a room impulse response; output has the same length and RMS.

    The RIR is normalised to its direct-path peak and the output aligned to it, so the result is
    not delayed by the RIR's pre-delay.
    """
    wav = np.asarray(wav, dtype=np.float32)
    rir = np.asarray(rir, dtype=np.float32)
    if rir.ndim != 1 or rir.size == 0:
        raise ValueError(f"rir must be a non-empty 1-D array, got shape {rir.shape}")
    peak_idx = int(np.argmax(np.abs(rir)))
    peak = float(abs(rir[peak_idx]))
    if peak == 0.0:
        return wav.copy()
    rir = rir / peak
    out = fftconvolve(wav, rir)[peak_idx : peak_idx + wav.shape[-1]]
    p_in, p_out = _power(wav), _power(out)
    if p_out > 0.0:
        out = out * np.sqrt(p_in / p_out)
    return _avoid_clipping(out).astype(np.float32)


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Play ``wav`` ``factor`` times faster (like ``sox speed``): length ``/ factor``, pitch and
    formants ``* factor``. Implemented as resampling by the rational ratio ``1 / factor``."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    wav = np.asarray(wav, dtype=np.float32)
    if factor == 1.0:
        return wav.copy()
    ratio = Fraction(factor).limit_denominator(1000)  # factor = p / q
    # p samples "at rate p" played back at rate q: the one resampler, from rate p to rate q
    out = resample(wav, ratio.numerator, ratio.denominator)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def spec_augment(
    feats: torch.Tensor,
    rng: np.random.Generator | torch.Generator,
    *,
    freq_masks: int = 2,
    freq_mask_width: int = 10,
    time_masks: int = 2,
    time_mask_width: int = 20,
    mask_value: float = 0.0,
    return_mask: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """SpecAugment frequency and time masking on ``feats: (B, T, F)`` or ``(T, F)``.

    Each utterance gets ``freq_masks`` bands of ``0..freq_mask_width`` bins and ``time_masks``
    spans of ``0..time_mask_width`` frames set to ``mask_value`` (0 = the mean of mean-normalised
    fbank). Returns a new tensor (and the boolean mask, same shape, when ``return_mask``).
    """
    single = feats.dim() == 2
    x = feats.unsqueeze(0) if single else feats
    if x.dim() != 3:
        raise ValueError(f"spec_augment expects (B, T, F) or (T, F), got {tuple(feats.shape)}")
    b, t, f = x.shape

    if isinstance(rng, torch.Generator):

        def draw(high: int) -> int:  # uniform in [0, high]
            return int(torch.randint(0, high + 1, (1,), generator=rng))
    else:

        def draw(high: int) -> int:
            return int(rng.integers(0, high + 1))

    mask = torch.zeros(b, t, f, dtype=torch.bool)
    for i in range(b):
        for _ in range(freq_masks):
            w = draw(min(freq_mask_width, f))
            start = draw(f - w)
            mask[i, :, start : start + w] = True
        for _ in range(time_masks):
            w = draw(min(time_mask_width, t))
            start = draw(t - w)
            mask[i, start : start + w, :] = True
    mask = mask.to(x.device)
    out = x.masked_fill(mask, mask_value)
    if single:
        out, mask = out[0], mask[0]
    return (out, mask) if return_mask else out


class Augmenter:
    """Waveform augmentation from a config and noise / RIR banks (``datasets.banks``: read on
    demand from packed shards, or lists of arrays).

    ``__call__(wav, rng, speed_index=0)`` applies, in order: the speed factor
    ``cfg.ordered_speed_factors[speed_index]`` (index 0 = none; the length changes by
    ``1 / factor``: crop afterwards), an RIR with probability ``reverb_prob``, a noise at a
    random SNR with probability ``noise_prob``. Use :meth:`augment_labelled` to also draw the
    speed factor and map the speaker label with :func:`speed_label`.
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        noises: Bank | list[np.ndarray] | None,
        rirs: Bank | list[np.ndarray] | None,
    ) -> None:
        self.cfg = cfg
        self.noises = as_bank(noises)
        self.rirs = as_bank(rirs)
        self.speed_factors = cfg.ordered_speed_factors
        if cfg.noise_prob > 0 and not self.noises:
            log.warning("noise_prob=%g but the noise bank is empty: no noise added", cfg.noise_prob)
        if cfg.reverb_prob > 0 and not self.rirs:
            log.warning("reverb_prob=%g but the RIR bank is empty: no reverb", cfg.reverb_prob)

    @property
    def num_speed_factors(self) -> int:
        return len(self.speed_factors)

    def choose_speed(self, rng: np.random.Generator) -> int:
        """A speed factor index drawn uniformly (always 0 with a single factor, or when
        ``cfg.speed_perturb`` is off)."""
        if len(self.speed_factors) == 1 or not self.cfg.speed_perturb:
            return 0
        return int(rng.integers(0, len(self.speed_factors)))

    def __call__(
        self, wav: np.ndarray, rng: np.random.Generator, speed_index: int = 0
    ) -> np.ndarray:
        out = np.asarray(wav, dtype=np.float32)
        if speed_index:
            out = speed_perturb(out, self.speed_factors[speed_index])
        if self.rirs and rng.random() < self.cfg.reverb_prob:
            out = reverberate(out, self.rirs.load(int(rng.integers(len(self.rirs)))))
        if self.noises and rng.random() < self.cfg.noise_prob:
            i = int(rng.integers(len(self.noises)))
            snr = float(rng.uniform(*self.cfg.snr_db))
            # Only the crop is read (same draws as add_noise cropping the whole noise).
            out = add_noise(out, self.noises.crop(i, out.shape[-1], rng), snr, rng)
        return out.astype(np.float32, copy=False)

    def augment_labelled(
        self, wav: np.ndarray, label: int, num_speakers: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        """Draw a speed factor, augment, and return ``(wav, speed_label(label, index, N))``."""
        idx = self.choose_speed(rng)
        return self(wav, rng, speed_index=idx), speed_label(label, idx, num_speakers)

    def spec_augment(
        self, feats: torch.Tensor, rng: np.random.Generator | torch.Generator
    ) -> torch.Tensor:
        """The config's SpecAugment (identity when ``cfg.specaug`` is off)."""
        if not self.cfg.specaug:
            return feats
        c = self.cfg
        return spec_augment(
            feats,
            rng,
            freq_masks=c.freq_masks,
            freq_mask_width=c.freq_mask_width,
            time_masks=c.time_masks,
            time_mask_width=c.time_mask_width,
        )

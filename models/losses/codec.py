"""Codec training losses: multi-resolution mel reconstruction and GAN terms.

- ``multi_resolution_mel_loss``: SoundStream's reconstruction loss (Zeghidour et al. 2021,
  arXiv 2107.03312, Sec. 3.5): mel spectrograms at window sizes ``2**6 .. 2**11`` (hop = window /
  4), an L1 distance on the linear mel magnitudes plus an L1 distance on their logs, averaged
  over the scales. The number of mel bands grows with the window as in descriptinc/
  descript-audio-codec (``dac/nn/loss.py``, ``MelSpectrogramLoss``) so that short windows do not
  ask for more bands than they have frequency bins; the filterbank depends on the sample rate.
- the multi-resolution STFT loss the codec task can add is ``models/losses/spectral.py``'s,
  shared with the TSE task.
- ``discriminator_loss`` / ``generator_adversarial_loss``: hinge (SoundStream Sec. 3.5, MelGAN)
  or least-squares (HiFi-GAN, Kong et al. 2020, arXiv 2010.05646; Mao et al. 2017) objectives.
- ``feature_matching_loss``: MelGAN's (Kumar et al. 2019, arXiv 1910.06711, Sec. 3.2) L1 distance
  between the discriminator's hidden activations on real and generated audio; optionally
  relative to the real activations' mean magnitude as EnCodec does (Défossez et al. 2022,
  arXiv 2210.13438, Sec. 3.4).

Read for understanding (not copied): facebookresearch/encodec ``encodec/balancer.py`` and
``msstftd.py``, descriptinc/descript-audio-codec ``dac/nn/loss.py``, jik876/hifi-gan ``models.py``.

The GAN functions are generic over any discriminator of ``models/codec/discriminators.py`` (and
any other that follows its shapes), so other tasks (TSE GAN fine-tuning) import them too:

- logits: a ``DiscriminatorOutput``, a list of them (several discriminators, e.g. multi-scale +
  STFT), or a plain list of logit tensors of any shape, one per sub-discriminator;
- features: a ``DiscriminatorOutput``, a list of them, or a list (per sub-discriminator) of lists
  (per layer) of feature-map tensors.

Every loss is a mean over sub-discriminators (and layers), so its scale does not depend on how
many discriminators a config enables; the weights live in the task config, never here.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from models.codec.discriminators import DiscriminatorOutput
from models.losses.spectral import MAGNITUDE_FLOOR, check_pair, stft_magnitude

AdversarialKind = Literal["hinge", "lsgan"]
DEFAULT_MEL_WINDOWS = (64, 128, 256, 512, 1024, 2048)  # SoundStream: 2**6 .. 2**11 samples
_EPS = MAGNITUDE_FLOOR  # floor under magnitudes before the log, and under divisors

Logits = DiscriminatorOutput | Sequence[DiscriminatorOutput] | Sequence[torch.Tensor]
Features = DiscriminatorOutput | Sequence[DiscriminatorOutput] | Sequence[Sequence[torch.Tensor]]


# -- spectral reconstruction -------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _mel_fbank(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """``(n_fft // 2 + 1, n_mels)`` slaney-normalised mel filterbank (cached on CPU)."""
    with warnings.catch_warnings():
        # The lowest bands of short windows can fall between two FFT bins and be all zero; both
        # sides of the loss then read 0 there, which is harmless, so the warning is noise.
        warnings.simplefilter("ignore", UserWarning)
        return AF.melscale_fbanks(
            n_fft // 2 + 1,
            f_min=0.0,
            f_max=sample_rate / 2,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )


def mel_bands(n_fft: int) -> int:
    """Mel bands used at window ``n_fft``: 5 per 32 samples (DAC's ratio), at least 4."""
    return max(4, n_fft * 5 // 32)


def multi_resolution_mel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_rate: int,
    *,
    windows: Sequence[int] = DEFAULT_MEL_WINDOWS,
    log_weight: float = 1.0,
    linear_weight: float = 1.0,
) -> torch.Tensor:
    """Multi-scale mel reconstruction loss (scalar), SoundStream-style.

    ``pred``, ``target``: ``(B, T)`` or ``(B, 1, T)`` float audio at ``sample_rate`` Hz, same
    shape. For each window ``w`` (hop ``w / 4``, ``mel_bands(w)`` bands up to Nyquist):
    ``linear_weight * L1(mel_p, mel_t) + log_weight * L1(log(mel_p + eps), log(mel_t + eps))``;
    the result is the mean over windows. Zero iff the mel spectrograms match.
    """
    pred, target = check_pair(pred, target)
    total = pred.new_zeros(())
    for n_fft in windows:
        fb = _mel_fbank(int(n_fft), mel_bands(int(n_fft)), int(sample_rate)).to(pred.device)
        hop = int(n_fft) // 4
        mp = torch.einsum("bft,fm->bmt", stft_magnitude(pred, n_fft, hop), fb)  # (B, M, frames)
        mt = torch.einsum("bft,fm->bmt", stft_magnitude(target, n_fft, hop), fb)
        loss = linear_weight * F.l1_loss(mp, mt)
        loss = loss + log_weight * F.l1_loss(mp.clamp_min(_EPS).log(), mt.clamp_min(_EPS).log())
        total = total + loss
    return total / len(windows)


# -- adversarial --------------------------------------------------------------------------------
def _outputs(x: Logits | Features) -> list[DiscriminatorOutput] | None:
    if isinstance(x, DiscriminatorOutput):
        return [x]
    if isinstance(x, Sequence) and x and all(isinstance(o, DiscriminatorOutput) for o in x):
        return list(x)
    return None


def _logits(x: Logits) -> list[torch.Tensor]:
    outs = _outputs(x)
    logits = [y for o in outs for y in o.logits] if outs is not None else list(x)
    if not logits or not all(isinstance(y, torch.Tensor) for y in logits):
        raise TypeError(
            "expected a DiscriminatorOutput, a list of them, or a non-empty list of logit tensors"
        )
    return logits


def _features(x: Features) -> list[list[torch.Tensor]]:
    outs = _outputs(x)
    feats = (
        [list(f) for o in outs for f in o.features] if outs is not None else [list(f) for f in x]
    )
    if not feats:
        raise TypeError(
            "expected a DiscriminatorOutput, a list of them, or a non-empty list of lists of "
            "feature maps"
        )
    return feats


def _check_kind(kind: str) -> None:
    if kind not in ("hinge", "lsgan"):
        raise ValueError(f"adversarial kind must be 'hinge' or 'lsgan', got {kind!r}")


def discriminator_loss(real: Logits, fake: Logits, kind: AdversarialKind = "hinge") -> torch.Tensor:
    """Discriminator objective (scalar), mean over sub-discriminators.

    ``real`` / ``fake``: the discriminators' outputs on real and on generated (detached) audio,
    in the same order (see the module docstring for the accepted forms).
    hinge: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``;
    lsgan: ``mean((D(x) - 1)**2) + mean(D(G(z))**2)``.
    """
    _check_kind(kind)
    real_l, fake_l = _logits(real), _logits(fake)
    if len(real_l) != len(fake_l):
        raise ValueError(f"{len(real_l)} real vs {len(fake_l)} fake sub-discriminator outputs")
    terms = []
    for r, f in zip(real_l, fake_l, strict=True):
        r, f = r.float(), f.float()
        if kind == "hinge":
            terms.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
        else:
            terms.append((r - 1).pow(2).mean() + f.pow(2).mean())
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake: Logits, kind: AdversarialKind = "hinge") -> torch.Tensor:
    """Generator's adversarial objective (scalar) from the discriminators' logits on generated
    audio, mean over sub-discriminators.

    hinge: ``mean(relu(1 - D(G(z))))`` (SoundStream's form; it stops pushing once the logit
    passes 1); lsgan: ``mean((D(G(z)) - 1)**2)``.
    """
    _check_kind(kind)
    terms = []
    for f in _logits(fake):
        f = f.float()
        terms.append(F.relu(1 - f).mean() if kind == "hinge" else (f - 1).pow(2).mean())
    return torch.stack(terms).mean()


def feature_matching_loss(
    real_feats: Features, fake_feats: Features, *, relative: bool = False
) -> torch.Tensor:
    """Feature-matching loss (scalar): mean over sub-discriminators and layers of
    ``mean|F_real - F_fake|`` (MelGAN / SoundStream), or with ``relative=True`` of
    ``mean|F_real - F_fake| / mean|F_real|`` (EnCodec).

    The real features are detached: this term trains the generator only. Pass the
    ``DiscriminatorOutput`` (or its ``.features``) of real and generated audio, same order.
    """
    real, fake = _features(real_feats), _features(fake_feats)
    if [len(r) for r in real] != [len(f) for f in fake]:
        raise ValueError("real and fake features differ in the number of discriminators/layers")
    terms = []
    for r_layers, f_layers in zip(real, fake, strict=True):
        for r, f in zip(r_layers, f_layers, strict=True):
            r = r.detach().float()
            dist = F.l1_loss(f.float(), r)
            terms.append(dist / r.abs().mean().clamp_min(_EPS) if relative else dist)
    return torch.stack(terms).mean()

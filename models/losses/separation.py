"""Single-source separation / extraction losses, per sample: ``(B, T)`` waveforms -> ``(B,)``.

Naming follows asteroid (``asteroid/losses/``): ``single_src_*`` compares each estimate with its
own target (what target speaker extraction needs, no permutation); ``pairwise_*`` would return
the ``(B, S, S)`` matrix for permutation-invariant training and is not needed here. The short
names the tasks use (``si_sdr_loss``, ...) are aliases. Every loss returns one value per sample
so a task can mask samples out (SI-SDR and spectral losses are undefined when the target speaker
is absent and the target is all zeros; ``energy_loss`` is the loss for those samples).

- ``si_sdr_loss``: negative scale-invariant SDR in dB (Le Roux et al. 2019, "SDR - half-baked or
  well done?", arXiv 1811.02508), zero-mean, with ``eps`` in both energies so silent estimates
  and targets give finite values and gradients.
- ``phase_sensitive_spectral_loss``: the *complex compressed* spectral loss (power-law
  compression 0.3 of magnitudes, a weighted sum of a magnitude term and a complex term that
  keeps the phase), as evaluated by Braun & Tashev 2021, "A consolidated view of loss functions
  for supervised deep learning-based speech enhancement", arXiv 2009.12286 (after Wilson et al.
  2018, "Exploring tradeoffs in models for low-latency speech enhancement"). Chosen over the
  PSA target (Erdogan et al. 2015) because the extractor outputs a waveform, not a mask on
  mixture magnitudes, and the complex term penalises phase errors directly.
- the multi-resolution STFT loss the TSE task uses is ``models/losses/spectral.py``'s, shared
  with the codec task.
- ``energy_loss``: ``10 log10(mean(est^2) + eps)`` dB, for target-absent samples: minimising it
  pushes the output to silence (floor ``10 log10(eps)``, -80 dB by default); the problem of
  inactive target speakers is studied by Delcroix et al., Interspeech 2022, "Listen only to me!
  How well can target speech extraction handle false alarms?".

Read for understanding (not copied): asteroid ``asteroid/losses/sdr.py``.
"""

from __future__ import annotations

import torch

from models.losses.spectral import stft


def _check_pair(est: torch.Tensor, target: torch.Tensor) -> None:
    if est.shape != target.shape or est.dim() != 2:
        raise ValueError(
            f"expected est and target of the same shape (B, T), got {tuple(est.shape)} and "
            f"{tuple(target.shape)}"
        )


def single_src_si_sdr_loss(
    est: torch.Tensor, target: torch.Tensor, *, zero_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Negative SI-SDR in dB: ``est, target: (B, T)`` -> ``(B,)`` (lower is better).

    ``SI-SDR = 10 log10(|a s|^2 / |a s - e|^2)`` with ``a = <e, s> / |s|^2``. ``eps`` keeps
    silent inputs finite; a target of all zeros gives a meaningless value: mask such samples.
    """
    _check_pair(est, target)
    if zero_mean:
        est = est - est.mean(dim=-1, keepdim=True)
        target = target - target.mean(dim=-1, keepdim=True)
    alpha = (est * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    proj = alpha * target  # (B, T): the part of the estimate explained by the target
    noise = est - proj
    ratio = (proj.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return -10.0 * torch.log10(ratio)


def single_src_complex_compressed_loss(
    est: torch.Tensor,
    target: torch.Tensor,
    *,
    n_fft: int = 1024,
    hop_length: int = 256,
    compress: float = 0.3,
    complex_weight: float = 0.3,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Complex compressed spectral MSE: ``est, target: (B, T)`` -> ``(B,)``.

    With ``X_c = |X|^c X / |X|`` (``c = compress``):
    ``(1 - w) mean(||S|^c - |E|^c|^2) + w mean(|S_c - E_c|^2)``, ``w = complex_weight``
    (Braun & Tashev 2021 use c = 0.3, w = 0.3). ``eps`` inside the magnitude keeps the
    gradient of ``|X|^c`` finite at zero.
    """
    _check_pair(est, target)

    def compressed(wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = stft(wav, n_fft, hop_length)  # (B, F, frames)
        power = spec.real.pow(2) + spec.imag.pow(2) + eps
        mag_c = power.pow(compress / 2)  # |X|^c
        return mag_c, spec * power.pow((compress - 1) / 2)  # |X|^c e^{j phase}

    mag_e, cplx_e = compressed(est)
    mag_t, cplx_t = compressed(target)
    mag_term = (mag_t - mag_e).pow(2).mean(dim=(1, 2))
    cplx_term = (cplx_t - cplx_e).abs().pow(2).mean(dim=(1, 2))
    return (1 - complex_weight) * mag_term + complex_weight * cplx_term


def energy_loss(est: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Output power in dB, ``10 log10(mean(est^2) + eps)``: ``est: (B, T)`` -> ``(B,)``.

    For samples whose target speaker is absent: minimising it drives the output to silence.
    The mean (not the sum) keeps it independent of the crop length.
    """
    if est.dim() != 2:
        raise ValueError(f"expected est (B, T), got {tuple(est.shape)}")
    return 10.0 * torch.log10(est.pow(2).mean(dim=-1) + eps)


# The names the training tasks use.
si_sdr_loss = single_src_si_sdr_loss
phase_sensitive_spectral_loss = single_src_complex_compressed_loss

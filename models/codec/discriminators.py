"""Codec discriminators (training-only; checkpointed in ``train_state``, never by ``load_model``).

- ``MultiScaleDiscriminator``: MelGAN's waveform discriminator (Kumar et al. 2019, "MelGAN",
  arXiv 1910.06711, Sec. 2.2) at 3 scales — the raw waveform and two 2x average-pooled copies —
  as SoundStream uses it (Zeghidour et al. 2021, arXiv 2107.03312, Sec. 3.4).
- ``STFTDiscriminator``: SoundStream's STFT discriminator (Sec. 3.4): complex STFT (window 1024,
  hop 256) as 2 channels (real, imaginary) -> 2-D convs that downsample the frequency axis ->
  one logit map over time.
- ``MultiPeriodDiscriminator``: HiFi-GAN's (Kong, Kim & Bae 2020, "HiFi-GAN", arXiv 2010.05646,
  Sec. 2.2) periods 2, 3, 5, 7, 11: the waveform folded into ``(T / p, p)`` and 2-D convs with
  ``(5, 1)`` kernels, for the TSE work. (HiFi-GAN's own multi-scale discriminator is MelGAN's
  with other widths and strides; the MelGAN one above stands in for it.)

Read for understanding (not copied): jik876/hifi-gan ``models.py``, facebookresearch/encodec
``encodec/msstftd.py`` and descriptinc/descript-audio-codec ``dac/model/discriminator.py``. All
return a ``DiscriminatorOutput``: per sub-discriminator logits and intermediate feature maps
(for the feature-matching loss in ``models/losses/codec.py``). Every conv is weight-normalised; leaky ReLU
slope 0.2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

_SLOPE = 0.2


@dataclass
class DiscriminatorOutput:
    """logits: one tensor per sub-discriminator (``(B, 1, T_k)`` or ``(B, 1, frames, 1)``);
    features: per sub-discriminator, the activations after each hidden layer."""

    logits: list[torch.Tensor]
    features: list[list[torch.Tensor]]


def _conv_stack(
    x: torch.Tensor, layers: nn.ModuleList, post: nn.Module
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every sub-discriminator's body: leaky-ReLU after each of ``layers`` (those activations
    are the feature maps of the feature-matching loss), then the ``post`` logits conv."""
    feats = []
    for layer in layers:
        x = F.leaky_relu(layer(x), _SLOPE)
        feats.append(x)
    return post(x), feats


class WaveformDiscriminator(nn.Module):
    """MelGAN discriminator block: ``(B, 1, T)`` -> logits ``(B, 1, ~T/256)`` + 6 feature maps.

    Widths ``channels * (1, 4, 16, 64, 64)`` capped at ``max_channels``; grouped strided convs
    (kernel 41, stride 4) keep it cheap.
    """

    def __init__(self, *, channels: int = 16, max_channels: int = 1024) -> None:
        super().__init__()
        widths = [min(channels * m, max_channels) for m in (1, 4, 16, 64, 64)]
        layers = [weight_norm(nn.Conv1d(1, widths[0], 15, padding=7))]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            groups = max(1, a // 4)
            while a % groups or b % groups:  # groups must divide both widths
                groups -= 1
            layers.append(weight_norm(nn.Conv1d(a, b, 41, stride=4, padding=20, groups=groups)))
        layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv1d(widths[-1], 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(x, self.layers, self.post)


class MultiScaleDiscriminator(nn.Module):
    """``forward(wav: (B, 1, T) or (B, T)) -> DiscriminatorOutput`` with ``num_scales`` entries;
    scale ``k`` sees the waveform average-pooled ``k`` times (kernel 4, stride 2)."""

    def __init__(self, *, num_scales: int = 3, channels: int = 16, max_channels: int = 1024):
        super().__init__()
        self.discriminators = nn.ModuleList(
            WaveformDiscriminator(channels=channels, max_channels=max_channels)
            for _ in range(num_scales)
        )

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = wav[:, None] if wav.dim() == 2 else wav  # (B, 1, T)
        logits, features = [], []
        for i, disc in enumerate(self.discriminators):
            if i:
                x = F.avg_pool1d(x, 4, stride=2, padding=1, count_include_pad=False)
            y, f = disc(x)
            logits.append(y)
            features.append(f)
        return DiscriminatorOutput(logits=logits, features=features)


class STFTDiscriminator(nn.Module):
    """``forward(wav: (B, 1, T) or (B, T)) -> DiscriminatorOutput`` with one entry.

    Input: complex STFT ``(B, 2, frames, n_fft/2 + 1)`` (real, imaginary; Hann window). Then a 7x7
    conv to ``channels`` and ``len(mults)`` blocks of (3 x 3 conv, then a conv with stride (time,
    frequency) = (1, 2) on blocks 1, 3, 5 and (2, 2) on blocks 2, 4, 6), as in SoundStream's
    Fig. 4; a final conv spans the remaining frequency bins, giving ``(B, 1, frames', 1)``.
    """

    def __init__(
        self,
        *,
        channels: int = 32,
        n_fft: int = 1024,
        hop_length: int = 256,
        mults: tuple[int, ...] = (2, 4, 4, 8, 8, 16),
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, 7, padding=3))]
        width, freq = channels, n_fft // 2 + 1
        for i, m in enumerate(mults):
            stride = (1, 2) if i % 2 == 0 else (2, 2)  # time x frequency
            layers.append(weight_norm(nn.Conv2d(width, width, 3, padding=1)))
            layers.append(
                weight_norm(nn.Conv2d(width, channels * m, (stride[0] + 2, 4), stride, (1, 1)))
            )
            width = channels * m
            freq = (freq + 2 - 4) // 2 + 1
        self.layers = nn.ModuleList(layers)
        self.post = weight_norm(nn.Conv2d(width, 1, (1, freq)))

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = wav[:, 0] if wav.dim() == 3 else wav  # (B, T)
        spec = torch.stft(
            x,
            self.n_fft,
            self.hop_length,
            window=self.window,
            center=True,
            return_complex=True,
        )  # (B, F, frames)
        x = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, F)
        logits, feats = _conv_stack(x, self.layers, self.post)
        return DiscriminatorOutput(logits=[logits], features=[feats])


class PeriodDiscriminator(nn.Module):
    """One HiFi-GAN period discriminator: ``(B, 1, T)`` -> logits ``(B, 1, ~T/(81 p), p)``.

    The waveform is right-padded (reflect) to a multiple of ``period`` and folded to
    ``(B, 1, T / p, p)``; widths ``channels * (1, 4, 16, 32, 32)``, kernels ``(5, 1)``, stride 3
    over the folded time axis for the first four layers.
    """

    def __init__(self, period: int, *, channels: int = 32) -> None:
        super().__init__()
        self.period = period
        widths = [1] + [channels * m for m in (1, 4, 16, 32, 32)]
        self.layers = nn.ModuleList(
            weight_norm(
                nn.Conv2d(a, b, (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)),
            )
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
        )
        self.post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        extra = -x.shape[-1] % self.period
        if extra:
            x = F.pad(x, (0, extra), mode="reflect" if extra < x.shape[-1] else "constant")
        b, c, t = x.shape
        x = x.view(b, c, t // self.period, self.period)  # (B, 1, T/p, p)
        return _conv_stack(x, self.layers, self.post)


class MultiPeriodDiscriminator(nn.Module):
    """``forward(wav: (B, 1, T) or (B, T)) -> DiscriminatorOutput``, one entry per period."""

    def __init__(self, *, periods: tuple[int, ...] = (2, 3, 5, 7, 11), channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, channels=channels) for p in periods
        )

    def forward(self, wav: torch.Tensor) -> DiscriminatorOutput:
        x = wav[:, None] if wav.dim() == 2 else wav  # (B, 1, T)
        logits, features = [], []
        for disc in self.discriminators:
            y, f = disc(x)
            logits.append(y)
            features.append(f)
        return DiscriminatorOutput(logits=logits, features=features)

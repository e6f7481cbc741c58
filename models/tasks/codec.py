"""Neural-codec training task: SoundStream / TinyStream generator + waveform and STFT critics.

Follows SoundStream (Zeghidour et al. 2021, arXiv 2107.03312, Sec. 3.4-3.5 and 4): the generator
(encoder + residual VQ + decoder) is trained on

    L_G = w_mel * L_mel + w_stft * L_stft                      (reconstruction, always)
        + w_commit * commit_loss                                (encoder commitment, always)
        + w_adv * L_adv + w_fm * L_fm                           (only from ``disc_warmup_steps``)

and the discriminators (MelGAN multi-scale waveform at 3 scales + the STFT discriminator with a
1024 window and 256 hop; HiFi-GAN multi-period optionally) on the hinge or least-squares
objective. The loss functions are ``models/losses/codec.py`` and ``models/losses/spectral.py``;
the D-then-G update is ``models/tasks/gan.py``'s, shared with the TSE task.

Commitment: ``ResidualVQ`` returns the *unweighted* commitment loss (mean over the used
quantizers of ``mse(residual, codeword)``) and its codebooks are learned by EMA, not by a loss.
The paper's beta = 0.25 therefore is ``commitment_weight`` here (default
``DEFAULT_COMMITMENT_WEIGHT``): the term added to ``L_G`` is exactly ``commitment_weight *
commit_loss``; no second factor hides in the quantizer.

Schedules: the generator trains on reconstruction (+ commitment) only before
``disc_warmup_steps``; from that step the discriminators are stepped, then the generator sees the
adversarial and feature-matching terms. The discriminators' learning rate is set by the loop's
per-group optimizer override (``optim.groups: {discriminator: {lr: ...}}``), not by this task: the
loop owns optimizers. Learning-rate decay is the loop's ``optim.schedule`` (exponential or cosine,
applied to both optimizers). Quantizer dropout is the model config's ``quantizer_dropout``.

Batches: ``{"wav": (B, T) float32 at the model's sample rate}``.

``ctx.forward`` runs only the generator (under autocast); the discriminators run outside it in
fp32 (see ``models/tasks/gan.py`` for how gradients are synchronised with two optimizers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from models.codec.discriminators import (
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    STFTDiscriminator,
)
from models.codec.quantize import DEFAULT_COMMITMENT_WEIGHT
from models.losses.codec import DEFAULT_MEL_WINDOWS, multi_resolution_mel_loss
from models.losses.separation import si_sdr_loss
from models.losses.spectral import multi_resolution_stft_loss
from models.registry import register_task
from models.tasks.base import StepContext, Task
from models.tasks.gan import adversarial_train_step

_KNOWN_DISCRIMINATORS = ("waveform", "stft", "period")


@dataclass(frozen=True)
class CodecTaskConfig:
    # loss weights (see the module docstring for how they combine)
    mel_weight: float = 1.0  # multi-resolution mel reconstruction (SoundStream lambda_rec)
    stft_weight: float = 0.0  # extra multi-resolution STFT loss (Parallel WaveGAN); 0 = off
    adversarial_weight: float = 1.0  # SoundStream lambda_adv
    feature_matching_weight: float = 100.0  # SoundStream lambda_feat
    commitment_weight: float = DEFAULT_COMMITMENT_WEIGHT  # beta; commit_loss itself is unweighted
    adversarial_kind: Literal["hinge", "lsgan"] = "hinge"
    relative_feature_matching: bool = False  # EnCodec's |real - fake| / mean|real| per layer
    mel_windows: tuple[int, ...] = DEFAULT_MEL_WINDOWS  # samples; hop = window / 4
    stft_windows: tuple[int, ...] = (512, 1024, 2048)  # Parallel WaveGAN's; hop = window / 4
    # discriminators: any of "waveform" (MelGAN multi-scale), "stft", "period" (HiFi-GAN MPD)
    discriminators: tuple[str, ...] = ("waveform", "stft")
    waveform_scales: int = 3  # raw, 2x and 4x average-pooled
    waveform_channels: int = 16  # first layer width; x4 per layer
    waveform_max_channels: int = 1024
    stft_channels: int = 32
    stft_n_fft: int = 1024  # STFT discriminator window (samples)
    stft_hop: int = 256
    period_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: int = 32
    disc_warmup_steps: int = 2000  # generator-only (reconstruction) steps before the GAN phase

    def __post_init__(self) -> None:
        unknown = sorted(set(self.discriminators) - set(_KNOWN_DISCRIMINATORS))
        if unknown or not self.discriminators:
            raise ValueError(
                f"discriminators must be a non-empty subset of {_KNOWN_DISCRIMINATORS}, "
                f"got {self.discriminators}"
            )
        if self.adversarial_kind not in ("hinge", "lsgan"):
            raise ValueError(
                f"adversarial_kind must be hinge or lsgan, got {self.adversarial_kind}"
            )
        if self.disc_warmup_steps < 0:
            raise ValueError(f"disc_warmup_steps must be >= 0, got {self.disc_warmup_steps}")
        if not self.mel_windows and self.mel_weight > 0:
            raise ValueError("mel_windows is empty but mel_weight > 0")


def build_discriminators(cfg: CodecTaskConfig) -> nn.ModuleDict:
    """The discriminators named in ``cfg.discriminators``, keyed by name."""
    discs: dict[str, nn.Module] = {}
    if "waveform" in cfg.discriminators:
        discs["waveform"] = MultiScaleDiscriminator(
            num_scales=cfg.waveform_scales,
            channels=cfg.waveform_channels,
            max_channels=cfg.waveform_max_channels,
        )
    if "stft" in cfg.discriminators:
        discs["stft"] = STFTDiscriminator(
            channels=cfg.stft_channels, n_fft=cfg.stft_n_fft, hop_length=cfg.stft_hop
        )
    if "period" in cfg.discriminators:
        discs["period"] = MultiPeriodDiscriminator(
            periods=cfg.period_periods, channels=cfg.period_channels
        )
    return nn.ModuleDict(discs)


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> tuple[float, float]:
    """``codes: (B, n, F)`` -> (mean fraction of codes used, mean perplexity) over quantizers.

    Perplexity is ``exp(entropy)`` of the batch's code histogram: ``codebook_size`` when every
    code is equally used, 1 when one code takes everything.
    """
    usage, perplexity = [], []
    for q in range(codes.shape[1]):
        counts = torch.bincount(codes[:, q].reshape(-1), minlength=codebook_size).float()
        p = counts / counts.sum()
        usage.append(float((counts > 0).float().mean()))
        entropy = -(p[p > 0] * p[p > 0].log()).sum()
        perplexity.append(float(entropy.exp()))
    return sum(usage) / len(usage), sum(perplexity) / len(perplexity)


@register_task("codec", CodecTaskConfig)
class CodecTask(Task):
    """``model``: a registered ``codec``-family model (``SoundStream`` / ``TinyStream``)."""

    sweep_metric = ("val_mel_distance", "min")

    def __init__(self, model: nn.Module, cfg: CodecTaskConfig) -> None:
        super().__init__()
        if not hasattr(model, "quantizer") or not hasattr(model, "bitrate"):
            raise ValueError(
                f"the codec task needs a codec model (soundstream / tinystream), "
                f"got {type(model).__name__}"
            )
        self.cfg = cfg
        self.model = model
        self.discriminators = build_discriminators(cfg)

    @property
    def sample_rate(self) -> int:
        return int(self.model.cfg.sample_rate)

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "generator": [p for p in self.model.parameters() if p.requires_grad],
            "discriminator": [p for p in self.discriminators.parameters() if p.requires_grad],
        }

    def gan_active(self, step: int) -> bool:
        return step >= self.cfg.disc_warmup_steps

    def _wav(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "wav" not in batch:
            raise KeyError(f"codec batches need a 'wav' entry (B, T); got keys {sorted(batch)}")
        wav = batch["wav"]
        return wav[:, 0] if wav.dim() == 3 else wav

    def reconstruction_losses(
        self, audio: torch.Tensor, wav: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``audio: (B, 1, T)`` reconstruction, ``wav: (B, T)`` -> weighted mel/stft parts."""
        cfg, zero = self.cfg, audio.new_zeros((), dtype=torch.float32)
        mel = (
            multi_resolution_mel_loss(audio, wav, self.sample_rate, windows=cfg.mel_windows)
            if cfg.mel_weight > 0
            else zero
        )
        stft = (
            multi_resolution_stft_loss(
                audio, wav, resolutions=[(w, w // 4) for w in cfg.stft_windows]
            ).mean()
            if cfg.stft_weight > 0
            else zero
        )
        return {"mel": mel, "stft": stft}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Generator pass: ``{"wav": (B, T)}`` -> ``audio: (B, 1, T)``, ``codes: (B, n, F)``,
        scalars ``mel``, ``stft``, ``commit``, ``num_quantizers`` and ``loss`` (reconstruction +
        commitment, weighted; the adversarial terms are added in ``train_step``)."""
        wav = self._wav(batch)
        out = self.model(wav)
        parts = self.reconstruction_losses(out.audio, wav)
        commit = out.commit_loss.float()
        loss = (
            self.cfg.mel_weight * parts["mel"]
            + self.cfg.stft_weight * parts["stft"]
            + self.cfg.commitment_weight * commit
        )
        return {
            "loss": loss,
            **parts,
            "commit": commit,
            "audio": out.audio,
            "codes": out.codes,
            "num_quantizers": torch.tensor(float(out.num_quantizers)),
        }

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        """D step on the detached reconstruction, then G step; always the same metric keys."""
        cfg = self.cfg
        out = ctx.forward(batch)
        gan = adversarial_train_step(
            ctx,
            list(self.discriminators.values()),
            self._wav(batch)[:, None],  # (B, 1, T)
            out["audio"],
            out["loss"],
            active=self.gan_active(ctx.step),
            kind=cfg.adversarial_kind,
            adversarial_weight=cfg.adversarial_weight,
            feature_matching_weight=cfg.feature_matching_weight,
            relative_feature_matching=cfg.relative_feature_matching,
        )
        n_q = int(out["num_quantizers"])
        usage, perplexity = codebook_stats(out["codes"].detach(), self.model.cfg.codebook_size)
        return {
            **gan,
            "mel": float(out["mel"].detach()),
            "stft": float(out["stft"].detach()),
            "commit": float(out["commit"].detach()),
            "num_quantizers": float(n_q),
            "kbps": self.model.bitrate(n_q) / 1000.0,
            "codebook_usage": usage,
            "perplexity": perplexity,
        }

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Reconstruction at full bitrate: ``mel_distance`` (the training mel loss), ``si_sdr``
        (dB, mean over the batch), ``kbps``; the model is put in eval mode for the pass."""
        was_training = self.model.training
        self.model.eval()
        try:
            wav = self._wav(batch).float()
            out = self.model(wav, num_quantizers=self.model.cfg.num_quantizers)
            audio = out.audio[:, 0].float()  # (B, T)
            mel = multi_resolution_mel_loss(
                audio, wav, self.sample_rate, windows=self.cfg.mel_windows or DEFAULT_MEL_WINDOWS
            )
            sdr = -si_sdr_loss(audio, wav)  # (B,) dB
            usage, perplexity = codebook_stats(out.codes, self.model.cfg.codebook_size)
        finally:
            self.model.train(was_training)
        return {
            "mel_distance": float(mel),
            "si_sdr": float(sdr.mean()),
            "kbps": self.model.bitrate() / 1000.0,
            "codebook_usage": usage,
            "perplexity": perplexity,
        }

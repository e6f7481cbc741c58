"""Target speaker extraction training task: reconstruction losses, target-absent suppression,
optional HiFi-GAN adversarial fine-tuning.

Batches (48 kHz, from the dynamic mixer): ``{"mix": (B, T), "target": (B, T) (zeros when the
target speaker is absent), "ref": (B, R), "present": (B,) 1/0}``, all float32.

Loss (weights in ``TSETaskConfig``, never in the network):

- target present: ``si_sdr * (-SI-SDR) + mr_stft * MR-STFT + psa * complex compressed spectral``
  (``models/losses/separation.py``), each averaged over the present samples only: SI-SDR and the
  spectral losses are undefined when the target is silent;
- target absent: ``absent_energy * 10 log10(mean(est^2) + eps)``, averaged over absent samples,
  which pushes the output towards silence (the USEF-TSE / TSE false-alarm setting);
- ``gan=True``: after ``gan_start_step`` optimizer steps, HiFi-GAN's multi-period (periods 2, 3,
  5, 7, 11) and MelGAN's multi-scale (3 scales) discriminators (Kong et al. 2020, arXiv
  2010.05646; ``models/codec/discriminators.py``) with least-squares adversarial and
  feature-matching losses from ``models/losses/codec.py``, on present samples only. Updates
  alternate per batch, discriminator first (HiFi-GAN ``train.py`` order, read, not copied).

Losses are computed in float32 outside autocast: log10 and STFT magnitudes of small signals are
not safe in bf16/fp16.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from models.codec.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from models.losses.separation import (
    energy_loss,
    multi_resolution_stft_loss,
    phase_sensitive_spectral_loss,
    si_sdr_loss,
)
from models.registry import register_task
from models.tasks.base import StepContext, Task


@dataclass(frozen=True)
class TSETaskConfig:
    si_sdr_weight: float = 1.0  # negative SI-SDR (dB) on target-present samples
    mr_stft_weight: float = 1.0  # multi-resolution STFT (SC + log magnitude), present samples
    psa_weight: float = 0.0  # complex compressed spectral loss (phase-sensitive), present samples
    absent_energy_weight: float = 0.1  # output power in dB on target-absent samples
    mr_stft_resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
    energy_eps: float = 1e-8  # floor of the absent-energy loss: 10 log10(1e-8) = -80 dB
    gan: bool = False  # adversarial fine-tuning with MPD + MSD discriminators
    gan_start_step: int = 0  # optimizer steps of reconstruction-only training before the GAN
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # HiFi-GAN multi-period discriminator
    mpd_channels: int = 32  # base width of each period discriminator
    msd_scales: int = 3  # MelGAN multi-scale discriminator: waveform + 2 pooled copies
    msd_channels: int = 16  # base width of each scale discriminator
    adversarial_kind: str = "lsgan"  # "lsgan" (HiFi-GAN) or "hinge" (MelGAN/SoundStream)
    adversarial_weight: float = 1.0  # generator adversarial loss
    feature_matching_weight: float = 2.0  # HiFi-GAN's lambda_fm

    def __post_init__(self) -> None:
        if self.adversarial_kind not in ("lsgan", "hinge"):
            raise ValueError(
                f"adversarial_kind must be 'lsgan' or 'hinge', got {self.adversarial_kind!r}"
            )
        if self.gan and self.mpd_periods == () and self.msd_scales == 0:
            raise ValueError("gan=True needs mpd_periods or msd_scales")
        if self.gan_start_step < 0:
            raise ValueError(f"gan_start_step must be >= 0, got {self.gan_start_step}")


@register_task("tse", TSETaskConfig)
class TSETask(Task):
    """``model``: a ``tse``-family extractor (``forward(mix, ref) -> TSEOutput``)."""

    def __init__(self, model: nn.Module, cfg: TSETaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.mpd: MultiPeriodDiscriminator | None = None
        self.msd: MultiScaleDiscriminator | None = None
        if cfg.gan:
            if cfg.mpd_periods:
                self.mpd = MultiPeriodDiscriminator(
                    periods=tuple(cfg.mpd_periods), channels=cfg.mpd_channels
                )
            if cfg.msd_scales:
                self.msd = MultiScaleDiscriminator(
                    num_scales=cfg.msd_scales, channels=cfg.msd_channels
                )

    # -- optimizers ------------------------------------------------------------------------
    def discriminator_parameters(self) -> list[nn.Parameter]:
        return [p for d in (self.mpd, self.msd) if d is not None for p in d.parameters()]

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        if not self.cfg.gan:
            return super().param_groups()
        return {
            "generator": [p for p in self.model.parameters() if p.requires_grad],
            "discriminator": self.discriminator_parameters(),
        }

    # -- reconstruction --------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> ``{"loss", "si_sdr", "mr_stft", "psa", "absent_energy_db", "present_frac"}``
        scalars plus ``"est"``: (B, T) float32, the extracted audio (for the GAN step)."""
        out = self.model(batch["mix"], batch["ref"])
        device_type = out.audio.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._losses(out.audio.float(), batch)

    def _losses(self, est: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        present = batch["present"] > 0.5  # (B,) bool
        target = batch["target"].float()
        # (P, T) / (B - P, T) by indexing, not by multiplying with a 0/1 mask: a masked-out
        # SI-SDR of a silent target could put NaN/inf into the backward pass
        est_p, tgt_p, est_a = est[present], target[present], est[~present]
        zero = est.new_zeros(())
        neg_sisdr = si_sdr_loss(est_p, tgt_p).mean() if est_p.numel() else zero
        mr = zero
        if cfg.mr_stft_weight and est_p.numel():
            mr = multi_resolution_stft_loss(
                est_p, tgt_p, resolutions=cfg.mr_stft_resolutions
            ).mean()
        psa = zero
        if cfg.psa_weight and est_p.numel():
            psa = phase_sensitive_spectral_loss(est_p, tgt_p).mean()
        absent = energy_loss(est_a, eps=cfg.energy_eps).mean() if est_a.numel() else zero
        loss = (
            cfg.si_sdr_weight * neg_sisdr
            + cfg.mr_stft_weight * mr
            + cfg.psa_weight * psa
            + cfg.absent_energy_weight * absent
        )
        return {
            "loss": loss,
            "si_sdr": -neg_sisdr.detach(),
            "mr_stft": mr.detach(),
            "psa": psa.detach(),
            "absent_energy_db": absent.detach(),
            "present_frac": present.float().mean(),
            "est": est,
        }

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        if not self.cfg.gan:
            return super().train_step(batch, ctx)
        out = ctx.forward(batch)
        metrics = {k: float(v.detach()) for k, v in out.items() if v.dim() == 0}
        present = batch["present"] > 0.5
        if ctx.step < self.cfg.gan_start_step or not bool(present.any()):
            # reconstruction-only warm-up (and batches with no target speech to discriminate)
            ctx.backward("generator", out["loss"])
            ctx.step_optimizer("generator")
            return metrics
        metrics.update(self._gan_step(out, batch["target"][present], present, ctx))
        return metrics

    def _gan_step(
        self,
        out: dict[str, torch.Tensor],
        real: torch.Tensor,
        present: torch.Tensor,
        ctx: StepContext,
    ) -> dict[str, float]:
        """One discriminator update, then one generator update (reconstruction + adversarial +
        feature matching). ``real``: (P, T) targets of the present samples.

        The discriminators run outside ``ctx.forward``; with two optimizers the task is not
        wrapped in DDP and the loop averages gradients across workers (``sync_grads``).
        """
        # imported here so the reconstruction-only task never depends on the codec losses
        from models.losses.codec import (
            discriminator_loss,
            feature_matching_loss,
            generator_adversarial_loss,
        )

        cfg = self.cfg
        discs = [d for d in (self.mpd, self.msd) if d is not None]
        fake = out["est"][present]  # (P, T)
        real = real.float()
        # discriminator: real vs detached fake
        d_real = [d(real) for d in discs]
        d_fake = [d(fake.detach()) for d in discs]
        d_loss = discriminator_loss(d_real, d_fake, kind=cfg.adversarial_kind)
        ctx.backward("discriminator", d_loss)
        ctx.step_optimizer("discriminator")
        # generator: gradients must reach the extractor only, not the discriminators
        params = self.discriminator_parameters()
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            with torch.no_grad():
                real_out = [d(real) for d in discs]  # features after the update, no graph
            fake_out = [d(fake) for d in discs]
            adv = generator_adversarial_loss(fake_out, kind=cfg.adversarial_kind)
            fm = feature_matching_loss(real_out, fake_out)
            g_loss = out["loss"] + cfg.adversarial_weight * adv + cfg.feature_matching_weight * fm
            ctx.backward("generator", g_loss)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
        ctx.step_optimizer("generator")
        return {
            "d_loss": float(d_loss.detach()),
            "g_adv": float(adv.detach()),
            "g_fm": float(fm.detach()),
            "g_loss": float(g_loss.detach()),
        }

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Per-batch means: ``si_sdr`` and ``si_sdri`` (dB, vs the mixture) over target-present
        samples; ``absent_energy_db`` (output power, dB) and ``absent_suppression_db``
        (``10 log10(E_mix / E_est)``) over target-absent samples; ``present_frac``. A key whose
        kind of sample is missing from the batch is left out rather than reported as 0."""
        est = self.model(batch["mix"], batch["ref"]).audio.float()
        mix, target = batch["mix"].float(), batch["target"].float()
        present = batch["present"] > 0.5
        metrics = {"present_frac": float(present.float().mean())}
        if present.any():
            sdr = -si_sdr_loss(est[present], target[present])
            sdr_mix = -si_sdr_loss(mix[present], target[present])
            metrics["si_sdr"] = float(sdr.mean())
            metrics["si_sdri"] = float((sdr - sdr_mix).mean())
        if (~present).any():
            e_est = est[~present].pow(2).mean(-1)
            e_mix = mix[~present].pow(2).mean(-1)
            metrics["absent_energy_db"] = float(energy_loss(est[~present]).mean())
            metrics["absent_suppression_db"] = float(
                (10 * torch.log10((e_mix + 1e-12) / (e_est + 1e-12))).mean()
            )
        return metrics

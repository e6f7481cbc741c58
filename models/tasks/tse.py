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
- ``gan=True``: after ``disc_warmup_steps`` optimizer steps, HiFi-GAN's multi-period (periods
  2, 3, 5, 7, 11) and MelGAN's multi-scale (3 scales) discriminators (Kong et al. 2020, arXiv
  2010.05646; ``models/codec/discriminators.py``) with least-squares adversarial and
  feature-matching losses, on present samples only, through the GAN step shared with the codec
  task (``models/tasks/gan.py``: discriminator first, then generator).

Losses are computed in float32 outside autocast: log10 and STFT magnitudes of small signals are
not safe in bf16/fp16.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from models.codec.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from models.losses.separation import energy_loss, phase_sensitive_spectral_loss, si_sdr_loss
from models.losses.spectral import DEFAULT_RESOLUTIONS, multi_resolution_stft_loss
from models.registry import register_task
from models.tasks.base import StepContext, Task
from models.tasks.gan import adversarial_train_step


@dataclass(frozen=True)
class TSETaskConfig:
    si_sdr_weight: float = 1.0  # negative SI-SDR (dB) on target-present samples
    mr_stft_weight: float = 1.0  # multi-resolution STFT (SC + log magnitude), present samples
    psa_weight: float = 0.0  # complex compressed spectral loss (phase-sensitive), present samples
    absent_energy_weight: float = 0.1  # output power in dB on target-absent samples
    mr_stft_resolutions: tuple[tuple[int, int], ...] = DEFAULT_RESOLUTIONS  # (n_fft, hop)
    energy_eps: float = 1e-8  # floor of the absent-energy loss: 10 log10(1e-8) = -80 dB
    gan: bool = False  # adversarial fine-tuning with MPD + MSD discriminators
    disc_warmup_steps: int = 0  # generator-only (reconstruction) steps before the GAN phase
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
        if self.disc_warmup_steps < 0:
            raise ValueError(f"disc_warmup_steps must be >= 0, got {self.disc_warmup_steps}")


@register_task("tse", TSETaskConfig)
class TSETask(Task):
    """``model``: a ``tse``-family extractor (``forward(mix, ref) -> TSEOutput``)."""

    sweep_metric = ("val_si_sdri", "max")  # improvement over the mixture (dB)

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
        cfg = self.cfg
        out = ctx.forward(batch)
        metrics = {k: float(v.detach()) for k, v in out.items() if v.dim() == 0}
        present = batch["present"] > 0.5
        # batches with no target speech have nothing to discriminate: reconstruction only
        active = ctx.step >= cfg.disc_warmup_steps and bool(present.any())
        gan = adversarial_train_step(
            ctx,
            [d for d in (self.mpd, self.msd) if d is not None],
            batch["target"][present],  # (P, T)
            out["est"][present],
            out["loss"],
            active=active,
            kind=cfg.adversarial_kind,
            adversarial_weight=cfg.adversarial_weight,
            feature_matching_weight=cfg.feature_matching_weight,
        )
        return {**metrics, **gan}

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

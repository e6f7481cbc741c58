"""Classification heads for speaker-embedding training (training-only: never in a checkpoint's
``state_dict``, they travel in ``train_state``).

- ``AAMSoftmax``: additive angular margin, ``s * cos(theta_y + m)`` on the target class
  (ArcFace, Deng et al. 2019, arXiv 1801.07698), with the ``th``/``mm`` fallback of the reference
  implementation (insightface ``ArcMarginProduct``; WeSpeaker ``wespeaker/models/projections.py``)
  for ``theta_y + m > pi``, where ``cos`` stops being monotonic in ``theta``.
- ``AMSoftmax``: additive cosine margin, ``s * (cos(theta_y) - m)`` (CosFace / AM-softmax,
  Wang et al. 2018, arXiv 1801.09414 / 1801.05599).
- ``SoftmaxHead``: a plain linear classifier (no margin), the baseline.
- ``MarginScheduler``: margin warm-up over optimizer steps (WeSpeaker ``MarginScheduler``).

Heads return logits ``(B, num_classes)``; the cross-entropy lives in ``models/losses/speaker.py``.
Every head has ``cosine(emb) -> (B, C)``: margin-free class scores for accuracy logging. Margin
heads have a mutable ``margin`` set through ``set_margin(m)`` (a Python float, not a buffer: the
scheduler recomputes it from the global step after a restart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class _MarginHead(nn.Module):
    """Shared part of the cosine-margin heads: a ``(C, D)`` class-weight matrix, the margin-free
    cosine scores, and the margin the training loop warms up via ``set_margin``."""

    def __init__(self, embed_dim: int, num_classes: int, *, margin: float, scale: float) -> None:
        super().__init__()
        if embed_dim < 1 or num_classes < 2:
            raise ValueError(
                f"need embed_dim >= 1 and num_classes >= 2, got {embed_dim}, {num_classes}"
            )
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))  # (C, D), normalised in use
        nn.init.xavier_uniform_(self.weight)
        self.set_margin(margin)

    def set_margin(self, margin: float) -> None:
        raise NotImplementedError

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """``emb: (B, D)`` -> cosine similarity to every class ``(B, C)`` (no margin, no scale)."""
        return F.linear(F.normalize(emb, dim=-1), F.normalize(self.weight, dim=-1))


class AAMSoftmax(_MarginHead):
    """Additive angular margin softmax head (ArcFace).

    ``forward(emb: (B, D) float, labels: (B,) int64) -> logits (B, C)``: ``scale * cos(theta_j)``
    for non-target classes and ``scale * cos(theta_y + margin)`` for the target class, where
    ``theta_j`` is the angle between the embedding and the (normalised) weight row of class ``j``.
    When ``theta_y + margin > pi`` the target logit falls back to ``cos(theta_y) - sin(pi - m) * m``
    (``easy_margin=False``, the reference default) or keeps ``cos(theta_y)`` when
    ``cos(theta_y) <= 0`` (``easy_margin=True``). ``fallback="3dspeaker"`` subtracts
    ``1 - cos(m)`` instead of ``sin(m) * m``, as 3D-Speaker's ``ArcMarginLoss`` does (continuous
    at the threshold: both sides are ``-1`` there). With ``margin=0`` the logits are exactly
    ``scale * cosine``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        *,
        margin: float = 0.2,
        scale: float = 32.0,
        easy_margin: bool = False,
        fallback: Literal["wespeaker", "3dspeaker"] = "wespeaker",
    ) -> None:
        if fallback not in ("wespeaker", "3dspeaker"):
            raise ValueError(f"AAM fallback must be 'wespeaker' or '3dspeaker', got {fallback!r}")
        self.fallback = fallback
        super().__init__(embed_dim, num_classes, margin=margin, scale=scale)
        self.easy_margin = easy_margin

    def set_margin(self, margin: float) -> None:
        """Change the angular margin (radians); called by the training loop during warm-up."""
        margin = float(margin)
        if not 0.0 <= margin < math.pi / 2:
            raise ValueError(f"AAM margin must be in [0, pi/2) radians, got {margin}")
        self.margin = margin
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)  # cos(theta) <= th  <=>  theta + m >= pi
        # what the target logit loses past the threshold (see the class docstring)
        if self.fallback == "3dspeaker":
            self.mm = 1.0 + math.cos(math.pi - margin)
        else:
            self.mm = math.sin(math.pi - margin) * margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(emb)  # (B, C)
        target = cosine.gather(1, labels.view(-1, 1))  # (B, 1)
        # clamp away from 0 so the sqrt has a finite gradient when cos == +-1 exactly
        sine = torch.sqrt((1.0 - target * target).clamp(min=1e-12))
        phi = target * self.cos_m - sine * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(target > 0, phi, target)
        else:
            phi = torch.where(target > self.th, phi, target - self.mm)
        logits = cosine.scatter(1, labels.view(-1, 1), phi)  # margin on the target column only
        return logits * self.scale

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, margin={self.margin}, "
            f"scale={self.scale}, easy_margin={self.easy_margin}, fallback={self.fallback}"
        )


class AMSoftmax(_MarginHead):
    """Additive (cosine) margin softmax head (CosFace / AM-softmax).

    ``forward(emb: (B, D), labels: (B,) int64) -> logits (B, C)``:
    ``scale * (cos(theta_j) - margin * [j == y])``.
    """

    def __init__(
        self, embed_dim: int, num_classes: int, *, margin: float = 0.2, scale: float = 30.0
    ) -> None:
        super().__init__(embed_dim, num_classes, margin=margin, scale=scale)

    def set_margin(self, margin: float) -> None:
        margin = float(margin)
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"AM margin must be in [0, 2] (cosine units), got {margin}")
        self.margin = margin

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = self.cosine(emb)  # (B, C)
        one_hot = F.one_hot(labels, self.num_classes).to(cosine.dtype)  # (B, C)
        return self.scale * (cosine - self.margin * one_hot)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_classes={self.num_classes}, margin={self.margin}, "
            f"scale={self.scale}"
        )


class SoftmaxHead(nn.Module):
    """Plain linear classifier: ``forward(emb: (B, D), labels) -> logits (B, C)``.

    ``labels`` is accepted (and ignored) so every head has the same call signature; ``cosine``
    returns the same logits (the margin-free scores used for accuracy).
    """

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.linear = nn.Linear(embed_dim, num_classes)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        return self.linear(emb)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.linear(emb)


class MarginScheduler:
    """Margin warm-up as a function of the global optimizer step (what the loop counts).

    ``value(step)``: ``initial`` before ``warmup_start``, ``final_margin`` from ``warmup_end`` on,
    and in between either a linear ramp (``mode="linear"``) or WeSpeaker's exponential ramp
    (``mode="exp"``: ``initial + (final - initial) * (1 - 1e-3 ** t)``, ``t`` the fraction of the
    warm-up done; fast at first, then flattening). With ``warmup_end <= warmup_start`` the margin
    jumps from ``initial`` to ``final_margin`` at ``warmup_start`` (``0, 0``: no warm-up at all).
    Steps rather than epochs because the loop always knows its global step, and epoch lengths
    change with the data; an epoch-based recipe converts with ``epoch * steps_per_epoch``.
    """

    def __init__(
        self,
        final_margin: float,
        *,
        warmup_start: int = 0,
        warmup_end: int = 0,
        initial: float = 0.0,
        mode: Literal["linear", "exp"] = "linear",
    ) -> None:
        if warmup_start < 0 or warmup_end < 0:
            raise ValueError(f"warm-up steps must be >= 0, got {warmup_start}, {warmup_end}")
        if mode not in ("linear", "exp"):
            raise ValueError(f"margin warm-up mode must be 'linear' or 'exp', got {mode!r}")
        self.final_margin = float(final_margin)
        self.initial = float(initial)
        self.warmup_start = int(warmup_start)
        self.warmup_end = int(warmup_end)
        self.mode = mode

    def value(self, step: int) -> float:
        if step < self.warmup_start:
            return self.initial
        if step >= self.warmup_end:
            return self.final_margin
        t = (step - self.warmup_start) / (self.warmup_end - self.warmup_start)  # in [0, 1)
        ratio = t if self.mode == "linear" else 1.0 - 1e-3**t
        return self.initial + (self.final_margin - self.initial) * ratio

    def __call__(self, step: int) -> float:
        return self.value(step)

    def __repr__(self) -> str:
        return (
            f"MarginScheduler(final_margin={self.final_margin}, warmup_start={self.warmup_start}, "
            f"warmup_end={self.warmup_end}, initial={self.initial}, mode={self.mode!r})"
        )


@dataclass(frozen=True)
class HeadConfig:
    type: Literal["aam", "am", "softmax"] = "aam"  # aam = ArcFace, am = CosFace, softmax = linear
    margin: float = 0.2  # final margin: radians for aam, cosine units for am; unused by softmax
    scale: float = 32.0  # logit scale s; unused by softmax
    easy_margin: bool = False  # aam only: keep cos(theta) when cos(theta) <= 0 instead of th/mm
    # aam only, easy_margin false: past theta + m > pi subtract sin(m) * m (wespeaker, insightface)
    # or 1 - cos(m) (3dspeaker: speakerlab's ArcMarginLoss, continuous at the threshold)
    margin_fallback: Literal["wespeaker", "3dspeaker"] = "wespeaker"
    margin_warmup_steps: int = 0  # optimizer steps of the ramp from 0 to `margin` (0 = none)
    margin_warmup_start: int = 0  # global step at which the ramp starts (margin 0 before it)
    margin_warmup_mode: Literal["linear", "exp"] = "linear"  # ramp shape, see MarginScheduler

    def scheduler(self) -> MarginScheduler:
        """The margin warm-up this config describes."""
        return MarginScheduler(
            self.margin,
            warmup_start=self.margin_warmup_start,
            warmup_end=self.margin_warmup_start + self.margin_warmup_steps,
            mode=self.margin_warmup_mode,
        )


def build_head(cfg: HeadConfig, embed_dim: int, num_classes: int) -> nn.Module:
    """Build the head ``cfg.type`` names, with its final margin set (the loop warms it up)."""
    if cfg.type == "aam":
        return AAMSoftmax(
            embed_dim,
            num_classes,
            margin=cfg.margin,
            scale=cfg.scale,
            easy_margin=cfg.easy_margin,
            fallback=cfg.margin_fallback,
        )
    if cfg.type == "am":
        return AMSoftmax(embed_dim, num_classes, margin=cfg.margin, scale=cfg.scale)
    if cfg.type == "softmax":
        return SoftmaxHead(embed_dim, num_classes)
    raise ValueError(f"unknown head type {cfg.type!r}; expected one of 'aam', 'am', 'softmax'")

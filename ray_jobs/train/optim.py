"""Optimizers, learning-rate schedules and mixed precision of the training loop (Ray-free).

``ray_jobs/train/loop.py`` builds one optimizer per task parameter group from the experiment's
``optim`` section (with that group's overrides) and sets each one's learning rate before every
optimizer step from :func:`lr_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ray_jobs.train.experiment import OptimConfig


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on CUDA devices that support it, full fp32 on CPU."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step``: linear warm-up, then decay."""
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        if cfg.warmup_mode == "constant":
            return cfg.warmup_factor
        if cfg.warmup_mode == "from_min":  # 3D-Speaker's WarmupCosineScheduler: min_lr at step 0
            return floor + (1 - floor) * step / cfg.warmup_steps
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or total_steps <= cfg.warmup_steps:
        return 1.0
    if cfg.schedule == "step":  # milestones are fractions of all steps, warm-up included
        return cfg.gamma ** sum(step >= m * total_steps for m in cfg.milestones)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return max(floor, floor**progress) if floor > 0 else 1.0  # exponential from 1 to floor

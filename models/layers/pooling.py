"""Temporal pooling layers shared by the speaker models.

Follows the pooling set of WeSpeaker ``wespeaker/models/pooling_layers.py`` and 3D-Speaker
``speakerlab/models/eres2net/pooling_layers.py``: statistics pooling (TSTP, Snyder et al. 2018),
attentive statistics pooling (ASTP, Okabe et al. 2018). Every pooling takes ``x: (B, C, T)``
(2-D feature maps are flattened to ``(B, C*F, T)`` by the caller) and returns ``(B, out_dim)``.
"""

from __future__ import annotations

import torch
from torch import nn


class TAP(nn.Module):
    """Temporal average pooling: ``(B, C, T)`` -> ``(B, C)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


class TSTP(nn.Module):
    """Temporal statistics pooling: mean and (unbiased) std over time -> ``(B, 2C)``.

    The unbiased std matches 3D-Speaker/WeSpeaker so their checkpoints give identical embeddings.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1)
        std = torch.sqrt(torch.var(x, dim=-1, unbiased=True) + 1e-7)
        return torch.cat([mean, std], dim=-1)


class ASTP(nn.Module):
    """Attentive statistics pooling with global context (as in ECAPA-TDNN): ``(B, C, T)`` ->
    ``(B, 2C)``."""

    def __init__(self, in_dim: int, bottleneck_dim: int = 128, global_context: bool = True) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.global_context = global_context
        attn_in = 3 * in_dim if global_context else in_dim
        self.linear1 = nn.Conv1d(attn_in, bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_context:
            ctx_mean = x.mean(dim=-1, keepdim=True).expand_as(x)
            ctx_std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + 1e-7).expand_as(x)
            attn_in = torch.cat([x, ctx_mean, ctx_std], dim=1)  # (B, 3C, T)
        else:
            attn_in = x
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(attn_in))), dim=-1)
        mean = torch.sum(alpha * x, dim=-1)
        var = torch.sum(alpha * x**2, dim=-1) - mean**2
        std = torch.sqrt(var.clamp(min=1e-7))
        return torch.cat([mean, std], dim=-1)

"""Temporal pooling layers shared by the speaker models.

Follows the pooling set of WeSpeaker ``wespeaker/models/pooling_layers.py`` and 3D-Speaker
``speakerlab/models/eres2net/pooling_layers.py``: temporal average pooling (TAP), statistics
pooling (TSTP, Snyder et al. 2018), attentive statistics pooling (ASTP, Okabe et al. 2018), and
the cluster-based aggregations NetVLAD (Arandjelovic et al. 2016, "NetVLAD: CNN architecture for
weakly supervised place recognition", arXiv 1511.07247) and GhostVLAD (Zhong et al. 2018, used
for speakers by Xie et al. 2019, "Utterance-level aggregation for speaker recognition in the
wild", arXiv 1902.10107, reference WeidiXie/VGG-Speaker-Recognition ``VladPooling``).

Every pooling takes ``x: (B, C, T)`` and returns ``(B, out_dim)``; a 2-D feature map
``(B, C, F, T)`` is flattened to ``(B, C*F, T)`` first (channel-major, as the references do), so
``in_dim`` is then ``C*F``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _as_frames(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` unchanged; ``(B, C, F, T)`` -> ``(B, C*F, T)``."""
    if x.dim() == 4:
        return x.flatten(1, 2)  # (B, C*F, T)
    if x.dim() != 3:
        raise ValueError(f"pooling expects (B, C, T) or (B, C, F, T), got {tuple(x.shape)}")
    return x


class TAP(nn.Module):
    """Temporal average pooling: ``(B, C, T)`` -> ``(B, C)``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _as_frames(x).mean(dim=-1)


class TSTP(nn.Module):
    """Temporal statistics pooling: mean and (unbiased) std over time -> ``(B, 2C)``.

    The unbiased variance and ``eps = 1e-8`` inside the square root match 3D-Speaker/WeSpeaker,
    so their checkpoints give the same embeddings (a constant channel, common after a ReLU, would
    otherwise get a different std).
    """

    def __init__(self, in_dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = 2 * in_dim
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_frames(x)
        mean = x.mean(dim=-1)
        std = torch.sqrt(torch.var(x, dim=-1, unbiased=True) + self.eps)
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
        x = _as_frames(x)
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


class NetVLAD(nn.Module):
    """NetVLAD / GhostVLAD aggregation: ``(B, C, T)`` -> ``(B, num_clusters * C)``.

    Each frame is softly assigned to ``num_clusters + ghost_clusters`` clusters (a 1x1 conv and a
    softmax over clusters); the assignment-weighted residuals to the learned centroids are summed
    over time. Ghost clusters (Zhong et al. 2018) take part in the softmax, so they can absorb
    noisy or uninformative frames, but their residuals are dropped from the output, which is why
    they need no centroids. Each cluster's residual vector is L2-normalised ("intra-normalisation",
    as in Xie et al.'s ``VladPooling``), and the result is flattened cluster-major.

    Args:
        in_dim: channels ``C`` of the frame features.
        num_clusters: clusters that contribute to the output (Xie et al.: 8).
        ghost_clusters: clusters that only absorb assignment mass (Xie et al.: 2; 0 is NetVLAD).
        normalize_input: L2-normalise every frame descriptor first (Arandjelovic et al.).
    """

    def __init__(
        self,
        in_dim: int,
        num_clusters: int = 8,
        ghost_clusters: int = 0,
        normalize_input: bool = False,
    ) -> None:
        super().__init__()
        if num_clusters < 1 or ghost_clusters < 0:
            raise ValueError(
                f"NetVLAD needs num_clusters >= 1 and ghost_clusters >= 0, "
                f"got {num_clusters} and {ghost_clusters}"
            )
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.ghost_clusters = ghost_clusters
        self.normalize_input = normalize_input
        self.out_dim = num_clusters * in_dim
        self.assign = nn.Conv1d(in_dim, num_clusters + ghost_clusters, kernel_size=1)
        # Small random centroids: a zero init would make every cluster's residual identical.
        self.centroids = nn.Parameter(0.1 * torch.randn(num_clusters, in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, T)`` (or ``(B, C, F, T)``, flattened) -> ``(B, num_clusters * C)``."""
        x = _as_frames(x)
        if self.normalize_input:
            x = F.normalize(x, p=2.0, dim=1)
        assign = torch.softmax(self.assign(x), dim=1)  # (B, K+G, T)
        assign = assign[:, : self.num_clusters]  # (B, K, T): ghosts dropped after the softmax
        # sum_t a[k,t] * (x[:,t] - c_k) = (a @ x^T)[k] - (sum_t a[k,t]) * c_k, without (B,K,C,T).
        vlad = torch.bmm(assign, x.transpose(1, 2))  # (B, K, C)
        vlad = vlad - assign.sum(dim=-1, keepdim=True) * self.centroids  # (B, K, C)
        vlad = F.normalize(vlad, p=2.0, dim=-1)  # intra-normalisation
        return vlad.flatten(1)  # (B, K*C)


class GhostVLAD(NetVLAD):
    """NetVLAD with ghost clusters (default 8 + 2, as in Xie et al. 2019):
    ``(B, C, T)`` -> ``(B, num_clusters * C)``; ghost clusters are not in the output."""

    def __init__(
        self,
        in_dim: int,
        num_clusters: int = 8,
        ghost_clusters: int = 2,
        normalize_input: bool = False,
    ) -> None:
        if ghost_clusters < 1:
            raise ValueError("GhostVLAD needs ghost_clusters >= 1; use NetVLAD for none")
        super().__init__(in_dim, num_clusters, ghost_clusters, normalize_input)

"""x-vector speaker embedding model.

Snyder, Garcia-Romero, Sell, Povey & Khudanpur 2018, "X-vectors: Robust DNN embeddings for
speaker recognition", ICASSP 2018. Follows 3D-Speaker ``speakerlab/models/xvector/TDNN.py``
(itself from WeSpeaker): five TDNN frame layers (context 5, 3 dilated 2, 3 dilated 3, 1, 1), each
conv -> ReLU -> non-affine BatchNorm (as in Kaldi), statistics pooling, and one affine segment
layer whose output is the embedding (the paper's "segment6" x-vector). Module names match
3D-Speaker's ``Xvector`` so its checkpoints load with ``strict=True``.

The frame layers use no padding (as in Kaldi and the reference), so ``T`` frames give
``T - 14`` pooled frames; inputs need at least 16 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.pooling import TSTP
from models.registry import register_model, register_preset

# (context size, dilation) of frame_1 .. frame_5 in the paper.
_FRAME_LAYERS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
MIN_FRAMES = 1 + sum(d * (k - 1) for k, d in _FRAME_LAYERS) + 1  # 2 frames left for the std


@dataclass(frozen=True)
class XVectorConfig:
    feat_dim: int = 80  # fbank bins of the input (the paper used 24 MFCCs; 3D-Speaker 80 fbank)
    embed_dim: int = 512  # x-vector size (segment6)
    hid_dim: int = 512  # channels of frame_1 .. frame_4
    stats_dim: int = 1500  # channels of frame_5, pooled to 2 * stats_dim


class TDNNLayer(nn.Module):
    """Dilated conv -> ReLU -> BatchNorm without affine parameters (Kaldi's x-vector layer):
    ``(B, C_in, T)`` -> ``(B, C_out, T - dilation * (context - 1))``."""

    def __init__(self, *, in_dim: int, out_dim: int, context: int, dilation: int) -> None:
        super().__init__()
        self.conv_1d = nn.Conv1d(in_dim, out_dim, context, dilation=dilation)
        self.bn = nn.BatchNorm1d(out_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv_1d(x)))


@register_model("xvector", XVectorConfig, family="speaker")
class XVector(nn.Module):
    """x-vector TDNN: ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)``.

    ``T`` must be at least ``MIN_FRAMES`` (16). The embedding is the raw segment-layer output
    (not L2-normalised), as in 3D-Speaker.
    """

    def __init__(self, cfg: XVectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [cfg.feat_dim] + [cfg.hid_dim] * 4 + [cfg.stats_dim]
        for i, (context, dilation) in enumerate(_FRAME_LAYERS):
            layer = TDNNLayer(
                in_dim=dims[i], out_dim=dims[i + 1], context=context, dilation=dilation
            )
            self.add_module(f"frame_{i + 1}", layer)
        self.pool = TSTP(cfg.stats_dim)
        self.seg_1 = nn.Linear(self.pool.out_dim, cfg.embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` with ``T >= 16`` -> ``(B, embed_dim)``."""
        if feats.shape[1] < MIN_FRAMES:
            raise ValueError(
                f"XVector needs at least {MIN_FRAMES} frames (its TDNN context is 15), "
                f"got {feats.shape[1]}; pad or use longer audio"
            )
        x = feats.transpose(1, 2)  # (B, F, T)
        x = self.frame_5(self.frame_4(self.frame_3(self.frame_2(self.frame_1(x)))))
        return self.seg_1(self.pool(x))  # (B, 2*stats_dim) -> (B, embed_dim)


register_preset(
    "xvector-tiny",
    "xvector",
    XVectorConfig(embed_dim=32, hid_dim=32, stats_dim=64),
    "x-vector with 32-channel frame layers, for tests and smoke runs",
)
register_preset(
    "xvector-512",
    "xvector",
    XVectorConfig(),
    "x-vector of Snyder et al. 2018 (512 hidden, 1500 stats, 512-dim) on 80-dim fbank",
)

"""ResNet speaker embedding models: ResNet34 (3D-Speaker/WeSpeaker) and Thin-ResNet34 + VLAD.

- ResNet34: He et al. 2016 basic-block ResNet on the fbank "image", as adapted for speaker
  verification by WeSpeaker ``wespeaker/models/resnet.py`` and 3D-Speaker
  ``speakerlab/models/resnet/ResNet.py``: a 3x3 stem, four stages of widths ``m, 2m, 4m, 8m``
  (stride 2 in frequency and time from stage 2 on), statistics pooling over the flattened
  ``(channels x frequency)`` map, and a two-layer embedding head. Module names match 3D-Speaker,
  so the ``3dspeaker/resnet34_256`` preset loads its checkpoints with ``strict=True``.
- Thin-ResNet34: Xie, Nagrani, Chung & Zisserman 2019, "Utterance-level aggregation for speaker
  recognition in the wild", arXiv 1902.10107 (reference WeidiXie/VGG-Speaker-Recognition): a 7x7
  stem with 2x2 max-pooling, thin stages of widths 48/96/128/256, a conv that collapses the
  frequency axis into frame features, and NetVLAD (Arandjelovic et al. 2016) or GhostVLAD
  aggregation (``models.layers.pooling``). The paper's cluster-score conv is a 1x1 conv on the
  frame features here, and its STFT-magnitude input is an fbank here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.pooling import TSTP, GhostVLAD, NetVLAD
from models.registry import register_model, register_preset


@dataclass(frozen=True)
class ResNetConfig:
    feat_dim: int = 80  # fbank bins of the input
    embed_dim: int = 256  # embedding size
    num_blocks: tuple[int, ...] = (3, 4, 6, 3)  # basic blocks per stage; (3, 4, 6, 3) = ResNet34
    m_channels: int = 32  # stage widths m, 2m, 4m, 8m (ignored when stage_channels is set)
    # Explicit stage widths; None means m_channels * (1, 2, 4, 8), or (48, 96, 128, 256) if thin.
    stage_channels: tuple[int, ...] | None = None
    # Thin-ResNet front and back end of Xie et al. 2019: 7x7 stem + 2x2 max-pool, and a conv
    # that collapses frequency into frame_dim-channel frame features before pooling.
    thin: bool = False
    stem_channels: int = 64  # thin only: stem width (the 3x3 stem of ResNet34 uses stage 1 width)
    frame_dim: int = 512  # thin only: channels of the frequency-collapsing conv
    pooling: Literal["tstp", "netvlad", "ghostvlad"] = "tstp"
    num_clusters: int = 8  # netvlad/ghostvlad: clusters in the output (Xie et al.: 8)
    ghost_clusters: int = 2  # ghostvlad only: clusters dropped from the output (Xie et al.: 2)
    two_emb_layer: bool = True  # Linear -> ReLU -> BN -> Linear head (3D-Speaker); else 1 Linear
    pool_eps: float = 1e-8  # tstp: added to the variance (3D-Speaker 1e-8, WeSpeaker 1e-7)

    def __post_init__(self) -> None:
        if len(self.num_blocks) != 4 or min(self.num_blocks) < 1:
            raise ValueError(f"num_blocks needs 4 positive stage sizes, got {self.num_blocks}")
        if self.stage_channels is not None and len(self.stage_channels) != 4:
            raise ValueError(f"stage_channels needs 4 widths, got {self.stage_channels}")
        if self.pooling == "ghostvlad" and self.ghost_clusters < 1:
            raise ValueError("pooling='ghostvlad' needs ghost_clusters >= 1 (or use 'netvlad')")

    @property
    def widths(self) -> tuple[int, ...]:
        if self.stage_channels is not None:
            return tuple(self.stage_channels)
        if self.thin:
            return (48, 96, 128, 256)
        return tuple(self.m_channels * k for k in (1, 2, 4, 8))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a (projected when the shape changes) shortcut:
    ``(B, C_in, F, T)`` -> ``(B, C_out, F/stride, T/stride)``."""

    def __init__(self, *, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()  # identity; a Sequential keeps the checkpoint keys
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLU/add are safe here (BN and add backward do not need their outputs) and
        # save a full-resolution copy per op, which matters on CPU.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


def _stage(*, in_channels: int, out_channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    blocks = [BasicBlock(in_channels=in_channels, out_channels=out_channels, stride=stride)]
    blocks += [
        BasicBlock(in_channels=out_channels, out_channels=out_channels, stride=1)
        for _ in range(num_blocks - 1)
    ]
    return nn.Sequential(*blocks)


def _halve(n: int) -> int:
    """Output size of a stride-2, kernel-3, padding-1 conv."""
    return (n - 1) // 2 + 1


@register_model("resnet", ResNetConfig, family="speaker")
class ResNet(nn.Module):
    """ResNet / Thin-ResNet: ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)``.

    The embedding is the raw output of the last linear layer (not L2-normalised), as in
    3D-Speaker.
    """

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        freq = cfg.feat_dim
        if cfg.thin:
            stem = cfg.stem_channels
            self.conv1 = nn.Conv2d(1, stem, kernel_size=7, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=2, stride=2)
            freq //= 2
        else:
            stem = widths[0]
            self.conv1 = nn.Conv2d(1, stem, kernel_size=3, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem)
        in_ch = stem
        for i, (width, n) in enumerate(zip(widths, cfg.num_blocks, strict=True)):
            stride = 1 if i == 0 else 2
            stage = _stage(in_channels=in_ch, out_channels=width, num_blocks=n, stride=stride)
            self.add_module(f"layer{i + 1}", stage)
            in_ch = width
            if stride == 2:
                freq = _halve(freq)
        if freq < 1:
            raise ValueError(f"feat_dim={cfg.feat_dim} is too small for this ResNet")

        if cfg.thin:
            # A (freq x 1) conv collapses the frequency axis: (B, C, F', T') -> (B, frame_dim, T').
            self.freq_conv: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, cfg.frame_dim, kernel_size=(freq, 1), bias=False),
                nn.BatchNorm2d(cfg.frame_dim),
                nn.ReLU(inplace=True),
            )
            frame_dim = cfg.frame_dim
        else:
            self.freq_conv = nn.Identity()
            frame_dim = in_ch * freq  # the pooling flattens (C, F') channel-major

        if cfg.pooling == "tstp":
            self.pool: nn.Module = TSTP(frame_dim, eps=cfg.pool_eps)
        elif cfg.pooling == "netvlad":
            self.pool = NetVLAD(frame_dim, num_clusters=cfg.num_clusters, ghost_clusters=0)
        else:
            self.pool = GhostVLAD(
                frame_dim, num_clusters=cfg.num_clusters, ghost_clusters=cfg.ghost_clusters
            )
        self.seg_1 = nn.Linear(self.pool.out_dim, cfg.embed_dim)
        if cfg.two_emb_layer:
            self.seg_bn_1: nn.Module = nn.BatchNorm1d(cfg.embed_dim, affine=False)
            self.seg_2: nn.Module = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` -> ``(B, embed_dim)``."""
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, C, F', T')
        x = self.freq_conv(x)  # thin: (B, frame_dim, 1, T')
        embed = self.seg_1(self.pool(x))  # pool flattens (B, C, F', T') -> (B, C*F', T')
        if self.cfg.two_emb_layer:
            embed = self.seg_2(self.seg_bn_1(F.relu(embed)))
        return embed


register_preset(
    "resnet-tiny",
    "resnet",
    ResNetConfig(embed_dim=32, num_blocks=(1, 1, 1, 1), m_channels=4),
    "ResNet with one basic block per stage, widths 4/8/16/32, TSTP; for tests and smoke runs",
)
register_preset(
    "resnet34",
    "resnet",
    ResNetConfig(),
    "ResNet34 as in 3D-Speaker/WeSpeaker: widths 32-256, TSTP, two-layer 256-dim head",
)
register_preset(
    "3dspeaker/resnet34_256",
    "resnet",
    ResNetConfig(feat_dim=80, embed_dim=256),
    "3D-Speaker ResNet(feat_dim=80, embedding_size=256); loads its checkpoints with strict=True",
)
_THIN = dict(thin=True, embed_dim=512, frame_dim=512, two_emb_layer=False)
register_preset(
    "thin-resnet34-ghostvlad",
    "resnet",
    ResNetConfig(**_THIN, pooling="ghostvlad", num_clusters=8, ghost_clusters=2),
    "Thin ResNet-34 + GhostVLAD (8 clusters + 2 ghosts), 512-dim, as in Xie et al. 2019",
)
register_preset(
    "thin-resnet34-netvlad",
    "resnet",
    ResNetConfig(**_THIN, pooling="netvlad", num_clusters=8),
    "Thin ResNet-34 + NetVLAD (8 clusters), 512-dim, as in Xie et al. 2019",
)

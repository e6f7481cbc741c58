"""ERes2Net and ERes2NetV2: Res2Net speaker embeddings with local and global feature fusion.

Papers:
- ERes2Net: Y. Chen, S. Zheng, H. Wang, L. Cheng, Q. Chen, J. Qi, "An Enhanced Res2Net with Local
  and Global Feature Fusion for Speaker Verification", Interspeech 2023, arXiv:2305.12838.
- ERes2NetV2: Y. Chen et al., "ERes2NetV2: Boosting Short-Duration Speaker Verification
  Performance with Computational Efficiency", Interspeech 2024, arXiv:2406.02167.

Reference implementation: 3D-Speaker ``speakerlab/models/eres2net/ERes2Net.py``,
``ERes2NetV2.py``, ``fusion.py`` and ``pooling_layers.py`` (github.com/modelscope/3D-Speaker).
Module and parameter names follow that checkpoint layout so a 3D-Speaker state dict loads with
``load_state_dict(strict=True)`` into the presets ``3dspeaker/eres2net_192``,
``3dspeaker/eres2net_base_512`` and ``3dspeaker/eres2netv2_192``.

Both are 2-D ResNet-34-style networks over the (freq, time) plane whose blocks split their
bottleneck channels into ``scale`` groups processed hierarchically (Res2Net). Local feature fusion
(LFF) merges the groups of the deeper stages with attentional feature fusion (AFF) instead of a
sum. Global feature fusion (GFF) merges the stage outputs bottom-up with AFF: ERes2Net fuses all
four stages, ERes2NetV2 only the last two and widens the blocks (``expansion``, ``base_width``).
Statistics pooling over time and one linear layer give the embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.pooling import TSTP
from models.registry import register_model, register_preset

# ReLU clipped at 20 inside the residual blocks (the reference's ``ReLU(nn.Hardtanh)``); the stem
# uses a plain ReLU.
_CLIP = 20.0


def _stride2(n: int) -> int:
    """Length after a stride-2 conv with k=3, p=1 (or k=1, p=0)."""
    return (n - 1) // 2 + 1


class AFF(nn.Module):
    """Attentional feature fusion of two same-shape maps ``x, y: (B, C, F, T)`` -> ``(B, C, F, T)``.

    ``a = 1 + tanh(att([x; y]))`` in (0, 2); the output is ``x * a + y * (2 - a)``.
    """

    def __init__(self, *, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inter = channels // reduction
        self.local_att = nn.Sequential(
            nn.Conv2d(2 * channels, inter, kernel_size=1),
            nn.BatchNorm2d(inter),
            nn.SiLU(inplace=True),
            nn.Conv2d(inter, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))
        # x * a + y * (2 - a) == y * 2 + (x - y) * a: one fewer full-size temporary.
        return torch.addcmul(y * 2.0, x - y, a)


class ERes2NetBlock(nn.Module):
    """Res2Net basic block with optional AFF local feature fusion.

    ``x: (B, in_planes, F, T)`` -> ``(B, planes * expansion, F', T')`` with ``F' = ceil(F/stride)``.
    The 1x1 input conv gives ``scale`` groups of ``width = floor(planes * base_width / 64)``
    channels; group ``i`` is fused with group ``i-1``'s output (a sum, or AFF when ``fuse``)
    before its 3x3 conv.
    """

    def __init__(
        self,
        *,
        in_planes: int,
        planes: int,
        stride: int,
        base_width: int,
        scale: int,
        expansion: int,
        fuse: bool,
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.width = width
        out_planes = planes * expansion
        self.conv1 = nn.Conv2d(in_planes, width * scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale))
        # Empty (no parameters) for the plain blocks, matching the reference state dict.
        self.fuse_models = nn.ModuleList(
            AFF(channels=width, reduction=4) for _ in range(scale - 1 if fuse else 0)
        )
        self.conv3 = nn.Conv2d(width * scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.hardtanh(self.bn1(self.conv1(x)), 0.0, _CLIP, inplace=True)
        groups = torch.split(out, self.width, dim=1)
        outs = []
        sp = groups[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i > 0:
                sp = self.fuse_models[i - 1](sp, groups[i]) if self.fuse_models else sp + groups[i]
            sp = F.hardtanh(bn(conv(sp)), 0.0, _CLIP, inplace=True)
            outs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        out += self.shortcut(x)
        return F.hardtanh(out, 0.0, _CLIP, inplace=True)


def _make_stage(
    *,
    in_planes: int,
    planes: int,
    num_blocks: int,
    stride: int,
    base_width: int,
    scale: int,
    expansion: int,
    fuse: bool,
) -> nn.Sequential:
    blocks = []
    for i in range(num_blocks):
        blocks.append(
            ERes2NetBlock(
                in_planes=in_planes if i == 0 else planes * expansion,
                planes=planes,
                stride=stride if i == 0 else 1,
                base_width=base_width,
                scale=scale,
                expansion=expansion,
                fuse=fuse,
            )
        )
    return nn.Sequential(*blocks)


class _ERes2NetTrunk(nn.Module):
    """Stem, four Res2Net stages and the pooling head shared by ERes2Net and ERes2NetV2, built
    from either config (attribute names are the checkpoint's: conv1, bn1, layer1..layer4, seg_1).
    Stages 3 and 4 use AFF local fusion."""

    def _build_trunk(self, cfg: ERes2NetConfig | ERes2NetV2Config) -> None:
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        for i, n in enumerate(cfg.num_blocks):
            planes = m * 2**i
            stage = _make_stage(
                in_planes=in_planes,
                planes=planes,
                num_blocks=n,
                stride=1 if i == 0 else 2,
                base_width=cfg.base_width,
                scale=cfg.scale,
                expansion=cfg.expansion,
                fuse=i >= 2,
            )
            setattr(self, f"layer{i + 1}", stage)
            in_planes = planes * cfg.expansion

    def _build_head(self, cfg: ERes2NetConfig | ERes2NetV2Config) -> None:
        """TSTP over stage 4's ``8m * expansion`` channels x ``feat_dim / 8`` bins, then
        ``seg_1`` to ``embed_dim`` (the checkpoint's names)."""
        freq = _stride2(_stride2(_stride2(cfg.feat_dim)))
        self.pool = TSTP(in_dim=cfg.m_channels * 8 * cfg.expansion * freq)
        self.seg_1 = nn.Linear(self.pool.out_dim, cfg.embed_dim)

    def stem(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        return F.relu(self.bn1(self.conv1(x)), inplace=True)


def _check_common(cfg: ERes2NetConfig | ERes2NetV2Config) -> None:
    if len(cfg.num_blocks) != 4 or min(cfg.num_blocks) < 1:
        raise ValueError(f"num_blocks must be 4 positive stage depths, got {cfg.num_blocks}")
    if cfg.scale < 1 or cfg.expansion < 1:
        raise ValueError(f"scale and expansion must be >= 1, got {cfg.scale}, {cfg.expansion}")
    # AFF in stage 3 squeezes the group width by 4: it must stay >= 1 channel.
    width3 = int(math.floor(cfg.m_channels * 4 * cfg.base_width / 64.0))
    if width3 // 4 < 1:
        raise ValueError(
            f"m_channels={cfg.m_channels}, base_width={cfg.base_width} give {width3}-channel "
            "groups in stage 3; AFF needs >= 4: increase m_channels or base_width"
        )
    if min(cfg.feat_dim, cfg.embed_dim) < 1:
        raise ValueError("feat_dim and embed_dim must be >= 1")


@dataclass(frozen=True)
class ERes2NetConfig:
    feat_dim: int = 80  # fbank bins; stages 2-4 halve the frequency axis (80 -> 10)
    embed_dim: int = 192  # embedding size
    m_channels: int = 32  # stem width; stage i has m_channels * 2**(i-1) planes (64 = "large")
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)  # blocks per stage (ResNet-34 depths)
    base_width: int = 32  # Res2Net group width = floor(planes * base_width / 64)
    scale: int = 2  # Res2Net groups per block
    expansion: int = 2  # block output channels = planes * expansion

    def __post_init__(self) -> None:
        _check_common(self)


@register_model("eres2net", ERes2NetConfig, family="speaker")
class ERes2Net(_ERes2NetTrunk):
    """ERes2Net with bottom-up global feature fusion of all four stages.

    ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)`` raw (not L2-normalised)
    embedding, as 3D-Speaker's ``ERes2Net.forward``. The time axis is downsampled by 8 before
    pooling, so ``T`` >= 1 works but a few dozen frames are needed for a meaningful embedding.
    """

    def __init__(self, cfg: ERes2NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        m, e = cfg.m_channels, cfg.expansion
        self._build_trunk(cfg)
        # Global fusion: stage i's output, downsampled by a strided 3x3 conv, is fused into
        # stage i+1's output.
        self.layer1_downsample = nn.Conv2d(m * e, m * 2 * e, 3, stride=2, padding=1, bias=False)
        self.layer2_downsample = nn.Conv2d(m * 2 * e, m * 4 * e, 3, stride=2, padding=1, bias=False)
        self.layer3_downsample = nn.Conv2d(m * 4 * e, m * 8 * e, 3, stride=2, padding=1, bias=False)
        self.fuse_mode12 = AFF(channels=m * 2 * e)
        self.fuse_mode123 = AFF(channels=m * 4 * e)
        self.fuse_mode1234 = AFF(channels=m * 8 * e)
        self._build_head(cfg)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` -> ``(B, embed_dim)``."""
        out1 = self.layer1(self.stem(feats))  # (B, m*e, F, T)
        out2 = self.layer2(out1)  # (B, 2m*e, F/2, T/2)
        fuse12 = self.fuse_mode12(out2, self.layer1_downsample(out1))
        out3 = self.layer3(out2)  # (B, 4m*e, F/4, T/4)
        fuse123 = self.fuse_mode123(out3, self.layer2_downsample(fuse12))
        out4 = self.layer4(out3)  # (B, 8m*e, F/8, T/8)
        fuse1234 = self.fuse_mode1234(out4, self.layer3_downsample(fuse123))
        stats = self.pool(fuse1234.flatten(1, 2))  # (B, C*F/8, T/8) -> (B, 2*C*F/8)
        return self.seg_1(stats)


@dataclass(frozen=True)
class ERes2NetV2Config:
    feat_dim: int = 80  # fbank bins; stages 2-4 halve the frequency axis (80 -> 10)
    embed_dim: int = 192  # embedding size
    m_channels: int = 64  # stem width; stage i has m_channels * 2**(i-1) planes
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)  # blocks per stage (ResNet-34 depths)
    base_width: int = 26  # Res2Net group width = floor(planes * base_width / 64)
    scale: int = 2  # Res2Net groups per block (the paper's w24s4ep4 variant: 24, 4, 4)
    expansion: int = 2  # block output channels = planes * expansion

    def __post_init__(self) -> None:
        _check_common(self)


@register_model("eres2netv2", ERes2NetV2Config, family="speaker")
class ERes2NetV2(_ERes2NetTrunk):
    """ERes2NetV2: wider stages, global feature fusion of stages 3 and 4 only.

    ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)`` raw (not L2-normalised)
    embedding, as 3D-Speaker's ``ERes2NetV2.forward``.
    """

    def __init__(self, cfg: ERes2NetV2Config) -> None:
        super().__init__()
        self.cfg = cfg
        m, e = cfg.m_channels, cfg.expansion
        self._build_trunk(cfg)
        self.layer3_ds = nn.Conv2d(m * 4 * e, m * 8 * e, 3, stride=2, padding=1, bias=False)
        self.fuse34 = AFF(channels=m * 8 * e, reduction=4)
        self._build_head(cfg)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` -> ``(B, embed_dim)``."""
        out2 = self.layer2(self.layer1(self.stem(feats)))
        out3 = self.layer3(out2)  # (B, 4m*e, F/4, T/4)
        out4 = self.layer4(out3)  # (B, 8m*e, F/8, T/8)
        fused = self.fuse34(out4, self.layer3_ds(out3))
        stats = self.pool(fused.flatten(1, 2))  # (B, C*F/8, T/8) -> (B, 2*C*F/8)
        return self.seg_1(stats)


register_preset(
    "eres2net-tiny",
    "eres2net",
    ERes2NetConfig(embed_dim=32, m_channels=4, num_blocks=(1, 1, 1, 1)),
    "ERes2Net with 4 stem channels and one block per stage, for smoke tests",
)
register_preset(
    "eres2net-large",
    "eres2net",
    ERes2NetConfig(m_channels=64),
    "ERes2Net-large (m_channels=64), 192-d embeddings",
)
register_preset(
    "eres2netv2-tiny",
    "eres2netv2",
    ERes2NetV2Config(embed_dim=32, m_channels=8, num_blocks=(1, 1, 1, 1)),
    "ERes2NetV2 with 8 stem channels and one block per stage, for smoke tests",
)
register_preset(
    "3dspeaker/eres2net_192",
    "eres2net",
    ERes2NetConfig(feat_dim=80, embed_dim=192, m_channels=32),
    "3D-Speaker ERes2Net(feat_dim=80, embedding_size=192) checkpoint layout",
)
register_preset(
    "3dspeaker/eres2net_base_512",
    "eres2net",
    ERes2NetConfig(feat_dim=80, embed_dim=512, m_channels=32),
    "3D-Speaker ERes2Net(feat_dim=80, embedding_size=512, m_channels=32) checkpoint layout",
)
register_preset(
    "3dspeaker/eres2netv2_192",
    "eres2netv2",
    ERes2NetV2Config(
        feat_dim=80, embed_dim=192, m_channels=64, base_width=26, scale=2, expansion=2
    ),
    "3D-Speaker ERes2NetV2(feat_dim=80, embedding_size=192, baseWidth=26, scale=2, "
    "expansion=2) checkpoint layout",
)
# The rest of the model table of 3D-Speaker's ``speakerlab/bin/infer_sv.py`` (modelscope ids
# ``iic/speech_eres2net_sv_zh-cn_16k-common``, ``..._large_sv_zh-cn_3dspeaker_16k``,
# ``iic/speech_eres2netv2w24s4ep4_sv_zh-cn_16k-common``). ERes2Net-huge is the reference's
# ``ERes2Net_huge.ERes2Net``: the same network with 64 stem channels, base width 24, 3 groups
# and expansion 4.
register_preset(
    "3dspeaker/eres2net_huge_192",
    "eres2net",
    ERes2NetConfig(feat_dim=80, embed_dim=192, m_channels=64, base_width=24, scale=3, expansion=4),
    "3D-Speaker ERes2Net_huge.ERes2Net(feat_dim=80, embedding_size=192) checkpoint layout",
)
register_preset(
    "3dspeaker/eres2net_large_512",
    "eres2net",
    ERes2NetConfig(feat_dim=80, embed_dim=512, m_channels=64),
    "3D-Speaker ERes2Net(feat_dim=80, embedding_size=512, m_channels=64) checkpoint layout",
)
register_preset(
    "3dspeaker/eres2netv2_w24s4ep4_192",
    "eres2netv2",
    ERes2NetV2Config(
        feat_dim=80, embed_dim=192, m_channels=64, base_width=24, scale=4, expansion=4
    ),
    "3D-Speaker ERes2NetV2(feat_dim=80, embedding_size=192, baseWidth=24, scale=4, "
    "expansion=4) checkpoint layout",
)

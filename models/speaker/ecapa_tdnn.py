"""ECAPA-TDNN speaker embedding model.

Desplanques, Thienpondt & Demuynck 2020, "ECAPA-TDNN: Emphasized Channel Attention, Propagation
and Aggregation in TDNN Based Speaker Verification", arXiv 2005.07143.

Follows the SpeechBrain-style layout used by 3D-Speaker ``speakerlab/models/ecapa_tdnn``: a TDNN
stem, SE-Res2Net blocks with growing dilation, multi-layer feature aggregation (MFA), attentive
statistics pooling with global context, BatchNorm and a final 1x1 conv. Sub-module names
(``blocks.N.tdnn1.conv.conv``, ``asp_bn.norm``, ``fc.conv`` ...) match that layout so a
3D-Speaker checkpoint loads with ``strict=True`` into the ``3dspeaker/ecapa_tdnn_c1024_192``
preset and gives the same embeddings; that is also why convs and norms sit one level deep inside
small wrappers.

WeSpeaker's ``wespeaker/models/ecapa_tdnn.py`` (``ECAPA_TDNN_c512`` / ``_c1024`` and their
``GLOB`` variants) is the same network with four differences, each a config option whose default
keeps the SpeechBrain layout: zero instead of reflect padding (``padding``), the Res2Net split
that skips the convs is the last instead of the first (``res2net_passthrough``), the MFA layer
has no BatchNorm (``mfa_norm``), and the pooling is the plain attentive statistics pooling of
``models.layers.pooling.ASTP`` (no BatchNorm in the attention, context std with the unbiased
variance; ``pooling="astp"``). ``models.hub.importers.wespeaker`` renames its keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.layers.pooling import ASTP
from models.registry import register_model, register_preset

PADDINGS = {"reflect": "reflect", "zeros": "constant"}  # config name -> F.pad mode


@dataclass(frozen=True)
class ECAPATDNNConfig:
    feat_dim: int = 80  # fbank bins of the input
    embed_dim: int = 192  # embedding size (the paper's and 3D-Speaker's lin_neurons)
    # Channels of the stem, the SE-Res2Net blocks, and the MFA layer (C=512 -> 1536 in the paper).
    channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)  # per layer, same order as channels
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)  # per layer, same order as channels
    attention_channels: int = 128  # bottleneck of the attentive pooling
    res2net_scale: int = 8  # Res2Net splits per block; channels must divide by it
    se_channels: int = 128  # squeeze-excitation bottleneck
    global_context: bool = True  # attention also sees the utterance mean/std
    # WeSpeaker's variant (see the module docstring); the defaults are SpeechBrain's/3D-Speaker's.
    padding: str = "reflect"  # "reflect" or "zeros": how the dilated convs pad the time axis
    res2net_passthrough: str = "first"  # "first" or "last": the Res2Net split with no conv
    mfa_norm: bool = True  # BatchNorm after the MFA layer's ReLU
    pooling: str = "ecapa"  # "ecapa" (TDNN-block attention) or "astp" (layers.pooling.ASTP)

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n < 3 or len(self.kernel_sizes) != n or len(self.dilations) != n:
            raise ValueError(
                "channels, kernel_sizes and dilations need the same length (>= 3: stem, "
                f"blocks, MFA); got {len(self.channels)}, {len(self.kernel_sizes)}, "
                f"{len(self.dilations)}"
            )
        bad = [c for c in self.channels[1:-1] if c % self.res2net_scale]
        if bad:
            raise ValueError(f"block channels {bad} must be divisible by res2net_scale")
        for name, allowed in (
            ("padding", tuple(PADDINGS)),
            ("res2net_passthrough", ("first", "last")),
            ("pooling", ("ecapa", "astp")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


class SameConv1d(nn.Module):
    """Conv1d with SpeechBrain's reflect "same" padding: ``(B, C_in, T)`` -> ``(B, C_out, T)``.

    Pads ``dilation * (kernel_size - 1) // 2`` frames on each side by reflection (zero padding
    would give different border frames than the reference checkpoints were trained with), or
    with zeros when ``padding="zeros"`` (WeSpeaker's layout).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        bias: bool = True,
        padding: str = "reflect",
    ) -> None:
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.mode = PADDINGS[padding]
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode=self.mode)
        return self.conv(x)


class BatchNorm(nn.Module):
    """``nn.BatchNorm1d`` under ``.norm`` (the checkpoint layout): ``(B, C[, T])`` -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    """Conv -> ReLU -> BatchNorm (none when ``norm=False``): ``(B, C_in, T)`` -> ``(B, C_out, T)``."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        padding: str = "reflect",
        norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = SameConv1d(in_channels, out_channels, kernel_size, dilation, padding=padding)
        self.norm = BatchNorm(out_channels) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        return x if self.norm is None else self.norm(x)


class Res2NetBlock(nn.Module):
    """Hierarchical split conv: ``(B, C, T)`` -> ``(B, C, T)``.

    The channels are cut into ``scale`` groups; one passes through unchanged (group 0, or the
    last one with ``passthrough="last"``), the others go in order through their own TDNN block
    after adding the previous block's output.
    """

    def __init__(
        self,
        *,
        channels: int,
        scale: int,
        kernel_size: int,
        dilation: int,
        padding: str = "reflect",
        passthrough: str = "first",
    ) -> None:
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.passthrough = passthrough
        self.blocks = nn.ModuleList(
            TDNNBlock(
                in_channels=width,
                out_channels=width,
                kernel_size=kernel_size,
                dilation=dilation,
                padding=padding,
            )
            for _ in range(scale - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = torch.chunk(x, self.scale, dim=1)
        first = self.passthrough == "first"
        kept, convolved = (chunks[0], chunks[1:]) if first else (chunks[-1], chunks[:-1])
        out = []
        y = None
        for block, x_i in zip(self.blocks, convolved, strict=True):
            y = block(x_i if y is None else x_i + y)
            out.append(y)
        return torch.cat([kept, *out] if first else [*out, kept], dim=1)


class SEBlock(nn.Module):
    """Squeeze-excitation over time: ``(B, C, T)`` -> ``(B, C, T)`` rescaled per channel."""

    def __init__(self, *, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = SameConv1d(channels, se_channels)
        self.conv2 = SameConv1d(se_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)  # (B, C, 1)
        s = torch.sigmoid(self.conv2(F.relu(self.conv1(s))))
        return x * s


class SERes2NetBlock(nn.Module):
    """TDNN(1x1) -> Res2Net(dilated) -> TDNN(1x1) -> SE, plus a residual connection:
    ``(B, C_in, T)`` -> ``(B, C_out, T)``."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        res2net_scale: int,
        se_channels: int,
        kernel_size: int,
        dilation: int,
        padding: str = "reflect",
        res2net_passthrough: str = "first",
    ) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(
            in_channels=in_channels, out_channels=out_channels, kernel_size=1, dilation=1
        )
        self.res2net_block = Res2NetBlock(
            channels=out_channels,
            scale=res2net_scale,
            kernel_size=kernel_size,
            dilation=dilation,
            padding=padding,
            passthrough=res2net_passthrough,
        )
        self.tdnn2 = TDNNBlock(
            in_channels=out_channels, out_channels=out_channels, kernel_size=1, dilation=1
        )
        self.se_block = SEBlock(channels=out_channels, se_channels=se_channels)
        # A 1x1 projection only when the width changes (no key otherwise, as in the reference).
        self.shortcut = (
            SameConv1d(in_channels, out_channels) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        x = self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))
        return x + residual


class AttentiveStatsPool(nn.Module):
    """ECAPA's channel- and context-dependent attentive statistics pooling:
    ``(B, C, T)`` -> ``(B, 2C)`` (attention-weighted mean and std).

    Unlike the shared ``models.layers.pooling.ASTP`` (WeSpeaker's), the attention here has a
    TDNN block (conv, ReLU, BatchNorm) before the tanh, and the statistics are population
    statistics clamped at ``1e-12``, as in SpeechBrain/3D-Speaker.
    """

    eps = 1e-12

    def __init__(self, *, channels: int, attention_channels: int, global_context: bool) -> None:
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(
            in_channels=3 * channels if global_context else channels,
            out_channels=attention_channels,
            kernel_size=1,
            dilation=1,
        )
        self.conv = SameConv1d(attention_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_context:
            # The 1x1 conv over [x; mean; std] (B, 3C, T) is split by input block: the mean/std
            # columns act on time-constant inputs, so they only add a per-channel bias. Same
            # result as the concatenation, without building the 3C x T tensor and a third of
            # the multiply-adds.
            c = x.shape[1]
            mean = x.mean(dim=2)  # (B, C)
            std = x.var(dim=2, unbiased=False).clamp(min=self.eps).sqrt()  # (B, C)
            conv = self.tdnn.conv.conv
            w = conv.weight.squeeze(2)  # (A, 3C)
            ctx = F.linear(torch.cat([mean, std], dim=1), w[:, c:], conv.bias)  # (B, A)
            h = F.conv1d(x, conv.weight[:, :c]) + ctx.unsqueeze(2)  # (B, A, T)
            h = self.tdnn.norm(F.relu(h))
        else:
            h = self.tdnn(x)
        attn = torch.softmax(self.conv(torch.tanh(h)), dim=2)  # (B, C, T)
        mean = (attn * x).sum(dim=2)  # (B, C)
        var = (attn * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2)
        return torch.cat([mean, var.clamp(min=self.eps).sqrt()], dim=1)  # (B, 2C)


@register_model("ecapa_tdnn", ECAPATDNNConfig, family="speaker")
class ECAPATDNN(nn.Module):
    """ECAPA-TDNN: ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)``.

    The embedding is the raw output of the last layer (not L2-normalised), as in 3D-Speaker.
    """

    def __init__(self, cfg: ECAPATDNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch, ks, dil = cfg.channels, cfg.kernel_sizes, cfg.dilations
        blocks: list[nn.Module] = [
            TDNNBlock(
                in_channels=cfg.feat_dim,
                out_channels=ch[0],
                kernel_size=ks[0],
                dilation=dil[0],
                padding=cfg.padding,
            )
        ]
        for i in range(1, len(ch) - 1):
            blocks.append(
                SERes2NetBlock(
                    in_channels=ch[i - 1],
                    out_channels=ch[i],
                    res2net_scale=cfg.res2net_scale,
                    se_channels=cfg.se_channels,
                    kernel_size=ks[i],
                    dilation=dil[i],
                    padding=cfg.padding,
                    res2net_passthrough=cfg.res2net_passthrough,
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TDNNBlock(
            in_channels=sum(ch[1:-1]),
            out_channels=ch[-1],
            kernel_size=ks[-1],
            dilation=dil[-1],
            padding=cfg.padding,
            norm=cfg.mfa_norm,
        )
        self.asp: nn.Module
        if cfg.pooling == "astp":
            self.asp = ASTP(ch[-1], cfg.attention_channels, global_context=cfg.global_context)
        else:
            self.asp = AttentiveStatsPool(
                channels=ch[-1],
                attention_channels=cfg.attention_channels,
                global_context=cfg.global_context,
            )
        self.asp_bn = BatchNorm(2 * ch[-1])
        self.fc = SameConv1d(2 * ch[-1], cfg.embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` -> ``(B, embed_dim)``; ``T`` must exceed the widest
        reflect padding (a few frames)."""
        x = feats.transpose(1, 2)  # (B, F, T)
        x = self.blocks[0](x)
        outs = []
        for block in self.blocks[1:]:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs, dim=1))  # (B, C_mfa, T)
        x = self.asp_bn(self.asp(x))  # (B, 2*C_mfa)
        return self.fc(x.unsqueeze(2)).squeeze(2)  # (B, embed_dim)


register_preset(
    "ecapa_tdnn-tiny",
    "ecapa_tdnn",
    ECAPATDNNConfig(
        embed_dim=32,
        channels=(32, 32, 32, 96),
        attention_channels=16,
        res2net_scale=4,
        se_channels=16,
        kernel_sizes=(5, 3, 3, 1),
        dilations=(1, 2, 3, 1),
    ),
    "ECAPA-TDNN with 2 SE-Res2Net blocks of 32 channels, for tests and smoke runs",
)
register_preset(
    "ecapa-tdnn-512",
    "ecapa_tdnn",
    ECAPATDNNConfig(),
    "ECAPA-TDNN, C=512 (the paper's small model), 192-dim",
)
register_preset(
    "3dspeaker/ecapa_tdnn_c1024_192",
    "ecapa_tdnn",
    ECAPATDNNConfig(embed_dim=192, channels=(1024, 1024, 1024, 1024, 3072)),
    "3D-Speaker ECAPA_TDNN(input_size=80, lin_neurons=192, channels=[1024]*4+[3072]); "
    "loads its checkpoints with strict=True",
)

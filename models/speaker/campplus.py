"""CAM++: context-aware masking densely connected TDNN speaker embeddings.

Paper: H. Wang, S. Zheng, Y. Chen, L. Cheng, Q. Chen, "CAM++: A Fast and Efficient Network for
Speaker Verification Using Context-Aware Masking", Interspeech 2023, arXiv:2303.00332.

Reference implementation: 3D-Speaker ``speakerlab/models/campplus/DTDNN.py`` and ``layers.py``
(github.com/modelscope/3D-Speaker). Module and parameter names follow that checkpoint layout so a
3D-Speaker state dict loads with ``load_state_dict(strict=True)``: the presets
``3dspeaker/campplus_192`` and ``3dspeaker/campplus_512`` build exactly those networks.

Layout: a 2-D convolutional front end (FCM, a small ResNet over the (freq, time) plane that
downsamples frequency by 8) feeds a 1-D D-TDNN trunk: a strided TDNN layer, three densely
connected blocks whose layers end in a context-aware masking (CAM) convolution, transition layers
that halve the width, statistics pooling and a linear embedding layer with a non-affine BatchNorm.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model, register_preset


@dataclass(frozen=True)
class CAMPPlusConfig:
    feat_dim: int = 80  # fbank bins; the front end downsamples them by 8
    embed_dim: int = 192  # embedding size (3D-Speaker: 192 for VoxCeleb, 512 for CN-Celeb)
    fcm_channels: int = 32  # width of the 2-D front end (FCM)
    fcm_blocks: tuple[int, int] = (2, 2)  # residual blocks in the two FCM stages
    init_channels: int = 128  # output channels of the first (strided) TDNN layer
    growth_rate: int = 32  # channels each dense layer adds
    bn_size: int = 4  # dense-layer bottleneck width = bn_size * growth_rate
    block_layers: tuple[int, ...] = (12, 24, 16)  # dense layers per D-TDNN block
    block_kernels: tuple[int, ...] = (3, 3, 3)  # CAM conv kernel size per block (odd)
    block_dilations: tuple[int, ...] = (1, 2, 2)  # CAM conv dilation per block
    cam_reduction: int = 2  # squeeze ratio of the CAM context branch
    seg_len: int = 100  # frames per segment for the CAM segment-level context (1 s at 10 ms)
    stats_eps: float = 0.0  # added to the pooled variance: 0 (3D-Speaker), 1e-7 (WeSpeaker)

    def __post_init__(self) -> None:
        n = len(self.block_layers)
        if len(self.block_kernels) != n or len(self.block_dilations) != n:
            raise ValueError(
                "block_layers, block_kernels and block_dilations must have the same length, got "
                f"{self.block_layers}, {self.block_kernels}, {self.block_dilations}"
            )
        if any(k % 2 == 0 for k in self.block_kernels):
            raise ValueError(f"block_kernels must be odd (same padding), got {self.block_kernels}")
        if self.bn_size * self.growth_rate < self.cam_reduction:
            raise ValueError("bn_size * growth_rate must be >= cam_reduction")
        if min(self.feat_dim, self.embed_dim, self.fcm_channels, self.init_channels) < 1:
            raise ValueError("feat_dim, embed_dim, fcm_channels and init_channels must be >= 1")


def _bn_relu(channels: int, relu: bool = True, affine: bool = True) -> nn.Sequential:
    """BatchNorm1d (+ ReLU) under the child names of 3D-Speaker's ``get_nonlinear``."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        batchnorm=nn.BatchNorm1d(channels, affine=affine)
    )
    if relu:
        layers["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


def _stride2(n: int) -> int:
    """Output length of a stride-2 conv with 'same' padding (k=3, p=1) or k=1, p=0."""
    return (n - 1) // 2 + 1


class ResBlock2d(nn.Module):
    """Basic 2-D residual block that strides the frequency axis only.

    ``x: (B, in_planes, F, T)`` -> ``(B, planes, ceil(F / stride), T)``.
    """

    def __init__(self, *, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out, inplace=True)


class FCM(nn.Module):
    """Front-end convolution module: ``(B, 1, F, T)`` -> ``(B, channels * ceil(F/8), T)``."""

    def __init__(self, *, feat_dim: int, channels: int, num_blocks: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(
            *[
                ResBlock2d(in_planes=channels, planes=channels, stride=2 if i == 0 else 1)
                for i in range(num_blocks[0])
            ]
        )
        self.layer2 = nn.Sequential(
            *[
                ResBlock2d(in_planes=channels, planes=channels, stride=2 if i == 0 else 1)
                for i in range(num_blocks[1])
            ]
        )
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * _stride2(_stride2(_stride2(feat_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)  # (B, C, F/8, T)
        return out.flatten(1, 2)  # (B, C*F/8, T)


class TDNNLayer(nn.Module):
    """Conv1d + BN + ReLU: ``(B, in_channels, T)`` -> ``(B, out_channels, T')``."""

    def __init__(
        self, *, in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.linear = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
        )
        self.nonlinear = _bn_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a local TDNN output gated by utterance + segment context.

    ``x: (B, bn_channels, T)`` -> ``(B, out_channels, T)``. The mask is
    ``sigmoid(W2 relu(W1 (mean_T(x) + segment_mean(x))))``, where ``segment_mean`` averages
    ``x`` over non-overlapping ``seg_len``-frame segments (the last one may be shorter) and
    broadcasts each average back over its segment.
    """

    def __init__(
        self,
        *,
        bn_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int,
        reduction: int,
        seg_len: int,
    ) -> None:
        super().__init__()
        self.seg_len = seg_len
        padding = (kernel_size - 1) // 2 * dilation
        self.linear_local = nn.Conv1d(
            bn_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False
        )
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.linear2 = nn.Conv1d(bn_channels // reduction, out_channels, 1)

    def segment_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` -> ``(B, C, T)``: each frame gets the mean of its segment."""
        t = x.shape[-1]
        seg = F.avg_pool1d(x, self.seg_len, self.seg_len, ceil_mode=True)  # (B, C, S)
        return seg.repeat_interleave(self.seg_len, dim=-1)[..., :t]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self.segment_mean(x)  # (B, C, T)
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context), inplace=True)))
        return y * mask


class CAMDenseTDNNLayer(nn.Module):
    """BN-ReLU-1x1 bottleneck, BN-ReLU, CAM conv: ``(B, in_channels, T)`` -> ``(B, growth, T)``."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        bn_channels: int,
        kernel_size: int,
        dilation: int,
        reduction: int,
        seg_len: int,
    ) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_channels)
        self.cam_layer = CAMLayer(
            bn_channels=bn_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            dilation=dilation,
            reduction=reduction,
            seg_len=seg_len,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleDict):
    """Densely connected block: ``(B, C, T)`` -> ``(B, C + num_layers * growth, T)``.

    Children are named ``tdnnd1..tdnndN`` as in the reference checkpoints.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        in_channels: int,
        growth: int,
        bn_channels: int,
        kernel_size: int,
        dilation: int,
        reduction: int,
        seg_len: int,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.growth = growth
        self.out_channels = in_channels + num_layers * growth
        for i in range(num_layers):
            self[f"tdnnd{i + 1}"] = CAMDenseTDNNLayer(
                in_channels=in_channels + i * growth,
                out_channels=growth,
                bn_channels=bn_channels,
                kernel_size=kernel_size,
                dilation=dilation,
                reduction=reduction,
                seg_len=seg_len,
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            # Autograd saves each layer's input view, so the buffer below cannot be written in
            # place while recording; concatenate instead.
            for layer in self.values():
                x = torch.cat([x, layer(x)], dim=1)
            return x
        # Inference: one preallocated output instead of a torch.cat per layer (which copies the
        # growing feature map once per layer); each layer reads the prefix written so far.
        b, _, t = x.shape
        out = x.new_empty(b, self.out_channels, t)
        out[:, : self.in_channels] = x
        c = self.in_channels
        for layer in self.values():
            out[:, c : c + self.growth] = layer(out[:, :c])
            c += self.growth
        return out


class TransitLayer(nn.Module):
    """BN-ReLU then 1x1 conv: ``(B, in_channels, T)`` -> ``(B, out_channels, T)``."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    """Mean and unbiased std over time: ``(B, C, T)`` -> ``(B, 2C)``.

    ``eps`` is added to the variance inside the sqrt: 0 in 3D-Speaker (so its weights give the
    same numbers), 1e-7 in WeSpeaker's TSTP.
    """

    def __init__(self, eps: float = 0.0) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.eps:
            var, mean = torch.var_mean(x, dim=-1, unbiased=True)
            return torch.cat([mean, torch.sqrt(var + self.eps)], dim=-1)
        std, mean = torch.std_mean(x, dim=-1, unbiased=True)
        return torch.cat([mean, std], dim=-1)


class DenseLayer(nn.Module):
    """Embedding layer: 1x1 conv (no bias) + BatchNorm without affine, ``(B, C)`` -> ``(B, D)``."""

    def __init__(self, *, in_channels: int, out_channels: int) -> None:
        super().__init__()
        # Conv1d rather than Linear so the weight has the reference's (D, C, 1) shape.
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = _bn_relu(out_channels, relu=False, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.linear.weight.squeeze(-1))  # (B, D)
        return self.nonlinear(x)


@register_model("campplus", CAMPPlusConfig, family="speaker")
class CAMPPlus(nn.Module):
    """CAM++ speaker-embedding network.

    ``forward(feats: (B, T, feat_dim) Kaldi fbank) -> (B, embed_dim)`` raw (not L2-normalised)
    embedding, as 3D-Speaker's ``CAMPPlus.forward``. The trunk runs at half the frame rate
    (the first TDNN layer has stride 2); ``T`` must be at least 2 frames.
    """

    def __init__(self, cfg: CAMPPlusConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.head = FCM(feat_dim=cfg.feat_dim, channels=cfg.fcm_channels, num_blocks=cfg.fcm_blocks)
        channels = self.head.out_channels
        trunk: OrderedDict[str, nn.Module] = OrderedDict()
        trunk["tdnn"] = TDNNLayer(
            in_channels=channels,
            out_channels=cfg.init_channels,
            kernel_size=5,
            stride=2,
            dilation=1,
        )
        channels = cfg.init_channels
        stages = zip(cfg.block_layers, cfg.block_kernels, cfg.block_dilations, strict=True)
        for i, (num_layers, kernel_size, dilation) in enumerate(stages, start=1):
            block = CAMDenseTDNNBlock(
                num_layers=num_layers,
                in_channels=channels,
                growth=cfg.growth_rate,
                bn_channels=cfg.bn_size * cfg.growth_rate,
                kernel_size=kernel_size,
                dilation=dilation,
                reduction=cfg.cam_reduction,
                seg_len=cfg.seg_len,
            )
            trunk[f"block{i}"] = block
            channels = block.out_channels
            trunk[f"transit{i}"] = TransitLayer(in_channels=channels, out_channels=channels // 2)
            channels //= 2
        trunk["out_nonlinear"] = _bn_relu(channels)
        trunk["stats"] = StatsPool(eps=cfg.stats_eps)
        trunk["dense"] = DenseLayer(in_channels=2 * channels, out_channels=cfg.embed_dim)
        self.xvector = nn.Sequential(trunk)
        self._init_weights()

    def _init_weights(self) -> None:
        # Same scheme as the reference: Kaiming-normal for the 1-D convs, zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats: (B, T, feat_dim)`` -> ``(B, embed_dim)``."""
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = self.head(x)  # (B, C*F/8, T)
        return self.xvector(x)


register_preset(
    "campplus-tiny",
    "campplus",
    CAMPPlusConfig(
        embed_dim=32,
        fcm_channels=8,
        fcm_blocks=(1, 1),
        init_channels=32,
        growth_rate=8,
        bn_size=2,
        block_layers=(2, 2, 2),
    ),
    "CAM++ with narrow layers and 2 dense layers per block, for smoke tests",
)
register_preset(
    "3dspeaker/campplus_192",
    "campplus",
    CAMPPlusConfig(feat_dim=80, embed_dim=192),
    "3D-Speaker CAMPPlus(feat_dim=80, embedding_size=192) checkpoint layout",
)
register_preset(
    "3dspeaker/campplus_512",
    "campplus",
    CAMPPlusConfig(feat_dim=80, embed_dim=512),
    "3D-Speaker CAMPPlus(feat_dim=80, embedding_size=512) checkpoint layout",
)

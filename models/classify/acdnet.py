"""ACDNet and Micro-ACDNet: environmental sound classification from raw 20 kHz waveforms.

Mohaimenuzzaman, Bergmeir, West & Meyer 2021, "Environmental Sound Classification on the Edge: A
Pipeline for Deep Acoustic Networks on Extremely Resource-Constrained Devices", arXiv 2103.03483
(Table 1). Follows the structure of the authors' reference implementation mohaimenz/acdnet
``torch/resources/models.py`` (read for understanding, not copied):

- SFEB (spectral feature extraction block), on ``(B, 1, 1, T)``: conv (1 x 9, stride 2) -> BN ->
  ReLU, conv (1 x 5, stride 2) -> BN -> ReLU, max-pool (1 x 50) — 2 * 2 * 50 = 200 samples = 10 ms
  at 20 kHz per output frame; 30,225 samples give 151 frames.
- the SFEB's channel axis is swapped into a height axis: ``(B, 1, C_sfeb, frames)``.
- TFEB (temporal feature extraction block), VGG-13 style: 3 x 3 conv -> BN -> ReLU layers
  (1 + 2 + 2 + 2 + 2) with a 2 x 2 max-pool after the first and after every pair, dropout 0.2,
  a 1 x 1 conv to ``num_classes`` channels -> BN -> ReLU, average pool over what is left, and a
  ``num_classes x num_classes`` linear layer. The pool sizes follow the reference's rule: halve an
  axis while it is >= 2, the last (average) pool takes what remains.

All convs have no bias (BN follows). ``forward`` returns logits (the reference appends a softmax;
the loss does that here). Micro-ACDNet is the same network with the pruned filter counts, so it is
a preset, not a class.

Sizes (50 classes, one 30,225-sample clip), checked by ``tests/models/test_acdnet.py`` with
``models/classify/flops.py``: ACDNet 4,735,378 parameters, 541.9M MACs, 544.4M FLOPs in the
paper's convention (MACs + ReLU outputs + pooling reads; paper: 4.74M, 544M); Micro-ACDNet
131,716 parameters, 14.29M MACs, 14.82M paper-convention FLOPs (paper: 0.131M, 14.82M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_model, register_preset

# Filter counts: SFEB conv1, conv2; TFEB conv3 .. conv11 (conv12 has num_classes filters).
ACDNET_CHANNELS = (8, 64, 32, 64, 64, 128, 128, 256, 256, 512, 512)
MICRO_ACDNET_CHANNELS = (7, 20, 10, 14, 22, 31, 35, 41, 51, 67, 69)


@dataclass(frozen=True)
class ACDNetConfig:
    num_classes: int = 50  # ESC-50
    sample_rate: int = 20000  # Hz; the SFEB frame is 10 ms at this rate
    input_length: int = 30225  # samples (about 1.51 s), as in the paper
    channels: tuple[int, ...] = ACDNET_CHANNELS  # 11 filter counts, SFEB (2) then TFEB (9)
    dropout: float = 0.2  # before the 1x1 classifier conv

    def __post_init__(self) -> None:
        if len(self.channels) != 11:
            raise ValueError(
                f"channels needs 11 filter counts (2 SFEB + 9 TFEB), got {self.channels}"
            )
        if self.sample_rate % 400:
            raise ValueError("sample_rate must be a multiple of 400 Hz (10 ms frames, stride 4)")


def _pool_sizes(length: int) -> list[int]:
    """Reference rule for one axis: 2 while the length is >= 2 (5 times), then what remains."""
    sizes = []
    for i in range(6):
        if length < 2:
            sizes.append(1)
        elif i == 5:
            sizes.append(length)
        else:
            sizes.append(2)
            length //= 2
    return sizes


class ConvBNReLU(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> ReLU``."""

    def __init__(self, in_ch: int, out_ch: int, kernel, *, stride=1, padding=0) -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )


@register_model("acdnet", ACDNetConfig, family="classify")
class ACDNet(nn.Module):
    """``forward(wav: (B, input_length) or (B, 1, input_length) float at 20 kHz) ->
    logits (B, num_classes)``."""

    def __init__(self, cfg: ACDNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.sfeb = nn.Sequential(
            ConvBNReLU(1, ch[0], (1, 9), stride=(1, 2)),
            ConvBNReLU(ch[0], ch[1], (1, 5), stride=(1, 2)),
        )
        self.sfeb_pool = cfg.sample_rate // 100 // 4  # 10 ms of samples / total stride 4
        frames = self._sfeb_frames(cfg.input_length)
        if frames < 1:
            raise ValueError(f"input_length {cfg.input_length} is too short for one 10 ms frame")
        pools = list(zip(_pool_sizes(ch[1]), _pool_sizes(frames), strict=True))
        tfeb: list[nn.Module] = [ConvBNReLU(1, ch[2], 3, padding=1), nn.MaxPool2d(pools[0])]
        for i in range(4):  # four pairs of 3x3 convs, each followed by a max-pool
            a, b, c = ch[2 + 2 * i], ch[3 + 2 * i], ch[4 + 2 * i]
            tfeb += [ConvBNReLU(a, b, 3, padding=1), ConvBNReLU(b, c, 3, padding=1)]
            tfeb.append(nn.MaxPool2d(pools[i + 1]))
        tfeb += [
            nn.Dropout(cfg.dropout),
            ConvBNReLU(ch[10], cfg.num_classes, 1),
            nn.AvgPool2d(pools[5]),
            nn.Flatten(),
        ]
        self.tfeb = nn.Sequential(*tfeb)
        self.fc = nn.Linear(cfg.num_classes, cfg.num_classes)

    def _sfeb_frames(self, length: int) -> int:
        t = (length - 9) // 2 + 1
        t = (t - 5) // 2 + 1
        return t // self.sfeb_pool

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav: (B, T) or (B, 1, T)``, ``T == cfg.input_length`` -> ``(B, num_classes)`` logits."""
        if wav.dim() == 3 and wav.shape[1] == 1:
            wav = wav[:, 0]
        if wav.dim() != 2 or wav.shape[-1] != self.cfg.input_length:
            raise ValueError(
                f"ACDNet expects (B, {self.cfg.input_length}) mono audio at "
                f"{self.cfg.sample_rate} Hz, got {tuple(wav.shape)}; crop or pad to that length"
            )
        x = self.sfeb(wav[:, None, None, :])  # (B, C_sfeb, 1, T')
        x = F.max_pool2d(x, (1, self.sfeb_pool))  # (B, C_sfeb, 1, frames)
        x = x.permute(0, 2, 1, 3)  # (B, 1, C_sfeb, frames): channels become the height axis
        return self.fc(self.tfeb(x))  # (B, num_classes)


register_preset("acdnet", "acdnet", ACDNetConfig(), "ACDNet, 50 classes (ESC-50), 4.74M params")
register_preset(
    "micro-acdnet",
    "acdnet",
    ACDNetConfig(channels=MICRO_ACDNET_CHANNELS),
    "Micro-ACDNet (pruned filter counts), 50 classes, 0.13M params",
)
register_preset(
    "acdnet-tiny",
    "acdnet",
    ACDNetConfig(num_classes=10, channels=(4, 8, 4, 8, 8, 8, 8, 8, 8, 8, 8)),
    "tiny ACDNet for tests: 10 classes, 4-8 filters per layer",
)

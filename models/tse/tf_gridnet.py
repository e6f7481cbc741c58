"""TF-GridNet blocks over band-split features.

Wang, Cornell, Choi, Masuyama, Scheibler, Wang & Watanabe 2023, "TF-GridNet: Integrating Full- and
Sub-Band Modeling for Speech Separation", arXiv 2211.12433. Reference implementation: ESPnet
``espnet2/enh/separator/tfgridnetv2_separator.py`` (``GridNetV2Block``), read for understanding,
not copied. Each block is, on features ``(B, T, Q, N)`` (frames, sub-bands, channels):

1. intra-frame full-band module: LayerNorm -> BiLSTM across the ``Q`` bands of each frame ->
   Linear back to ``N`` -> residual;
2. sub-band temporal module: LayerNorm -> BiLSTM across the ``T`` frames of each band -> Linear
   -> residual;
3. full-band self-attention across frames: per head, queries/keys are ``E`` channels per band and
   values ``N / L`` channels per band, each 1x1-projected, PReLU'd and LayerNorm'd over
   (band, channel); a frame's query/key/value is the concatenation over all bands; then a 1x1
   projection -> PReLU -> LayerNorm -> residual.

Differences from the paper: the "frequency" axis is the 53 band-split sub-bands, not STFT bins,
and the LSTMs see one band/frame at a time (unfold kernel ``I = 1``, stride ``J = 1``) so the 6-block
v1/v2 presets land at the parameter counts of the issue (about 7.8M / 11.5M).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _RNNModule(nn.Module):
    """LayerNorm -> BiLSTM over axis ``dim`` of ``(B, T, Q, N)`` -> Linear -> residual."""

    def __init__(self, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim)
        self.rnn = nn.LSTM(feature_dim, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, feature_dim)

    def forward(self, h: torch.Tensor, over_bands: bool) -> torch.Tensor:
        b, t, q, n = h.shape
        x = self.norm(h)
        if over_bands:
            x = x.reshape(b * t, q, n)  # (B*T, Q, N): sequence over bands
        else:
            x = x.transpose(1, 2).reshape(b * q, t, n)  # (B*Q, T, N): sequence over frames
        x = self.proj(self.rnn(x)[0])
        if over_bands:
            x = x.view(b, t, q, n)
        else:
            x = x.view(b, q, t, n).transpose(1, 2)  # (B, T, Q, N)
        return h + x


class _ProjNorm(nn.Module):
    """1x1 projection -> PReLU -> LayerNorm over (band, channel): ``(B, T, Q, N) -> (B, T, Q, C)``."""

    def __init__(self, feature_dim: int, out_dim: int, num_bands: int) -> None:
        super().__init__()
        self.proj = nn.Linear(feature_dim, out_dim)
        self.act = nn.PReLU()
        self.norm = nn.LayerNorm((num_bands, out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.proj(h)))


class FullBandAttention(nn.Module):
    """TF-GridNet full-band self-attention across frames (``(B, T, Q, N) -> (B, T, Q, N)``)."""

    def __init__(self, feature_dim: int, num_bands: int, heads: int, qk_dim: int) -> None:
        super().__init__()
        if feature_dim % heads:
            raise ValueError(f"feature_dim {feature_dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.ModuleList(_ProjNorm(feature_dim, qk_dim, num_bands) for _ in range(heads))
        self.k = nn.ModuleList(_ProjNorm(feature_dim, qk_dim, num_bands) for _ in range(heads))
        self.v = nn.ModuleList(
            _ProjNorm(feature_dim, feature_dim // heads, num_bands) for _ in range(heads)
        )
        self.out = _ProjNorm(feature_dim, feature_dim, num_bands)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, q, n = h.shape
        outs = []
        for wq, wk, wv in zip(self.q, self.k, self.v, strict=True):
            qh, kh = wq(h).flatten(2), wk(h).flatten(2)  # (B, T, Q*E)
            vh = wv(h)  # (B, T, Q, N/L)
            att = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(qh.shape[-1]), dim=-1)
            outs.append((att @ vh.flatten(2)).view(b, t, q, -1))  # (B, T, Q, N/L)
        return h + self.out(torch.cat(outs, dim=-1))


class TFGridNetBlock(nn.Module):
    """One TF-GridNet block: ``forward(h: (B, T, Q, N)) -> (B, T, Q, N)``."""

    def __init__(
        self, *, feature_dim: int, hidden: int, num_bands: int, heads: int, qk_dim: int
    ) -> None:
        super().__init__()
        self.intra = _RNNModule(feature_dim, hidden)
        self.inter = _RNNModule(feature_dim, hidden)
        self.attn = FullBandAttention(feature_dim, num_bands, heads, qk_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.intra(h, over_bands=True)
        h = self.inter(h, over_bands=False)
        return self.attn(h)

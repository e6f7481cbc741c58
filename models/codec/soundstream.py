"""SoundStream neural audio codec (24 kHz) and its TinyStream configuration (16 kHz).

Zeghidour, Luebs, Omran, Skoglund & Tagliasacchi 2021, "SoundStream: An End-to-End Neural Audio
Codec", arXiv 2107.03312 (Fig. 2, Sec. 3). Read for understanding (not copied):
facebookresearch/encodec ``encodec/modules/seanet.py`` (the SEANet encoder/decoder SoundStream's
is built like) and descriptinc/descript-audio-codec.

Architecture (``C`` = ``channels``, ``D`` = ``dim``):

- encoder: causal conv(1 -> C, k 7); for each stride ``S_i`` (2, 4, 5, 8 -> hop 320, 75 Hz at
  24 kHz) an encoder block = 3 residual units at the block's input width ``N`` (dilations 1, 3, 9;
  each ``x + conv1x1(ELU(conv_k7,dil(ELU(x))))``) then ELU + causal conv(N -> 2N, k 2S, stride S);
  widths C -> 2C -> 4C -> 8C -> 16C; finally ELU + causal conv(16C -> D, k 3).
- residual VQ on the ``D``-dim frames (``models.codec.quantize.ResidualVQ``).
- decoder mirrors it: causal conv(D -> 16C, k 7); per block ELU + causal transposed conv
  (2N -> N, k 2S, stride S) then 3 residual units at N; ELU + causal conv(C -> 1, k 7).

All convolutions are causal and weight-normalised, so the encoder streams (``encode_stream``).
TinyStream swaps every k > 1 convolution for a depthwise-separable one and uses strides 4, 4, 4, 4
(hop 256, 62.5 Hz at 16 kHz) with small ``C``/``D``; it is registered as its own model name with
its own defaults and presets, sharing this class.

Parameter counts (codebooks are buffers, not counted): about ``9000 * C**2`` in the blocks plus
``16C * D * 10`` in the two bottleneck convs (k 3 and k 7), so ``soundstream-tiny`` (16/256) has
2.96M, ``soundstream-small`` (16/512) 3.61M and ``soundstream-base`` (32/512) 11.8M. The issue's
2.4M / 8.4M / 33M cannot all hold for a network in which D only sizes the bottleneck (tiny and
small differ only in D); ``tests/models/test_codec.py`` pins the counts of this layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.codec.quantize import ResidualVQ
from models.layers.conv import CausalConv1d, CausalConvTranspose1d, StreamState
from models.registry import register_model, register_preset


@dataclass(frozen=True)
class SoundStreamConfig:
    sample_rate: int = 24000  # Hz of input and output audio
    channels: int = 32  # C: width of the first conv; block i has C * 2**(i+1) channels
    dim: int = 512  # D: embedding (codebook vector) size
    strides: tuple[int, ...] = (2, 4, 5, 8)  # encoder strides; the decoder uses them reversed
    dilations: tuple[int, ...] = (1, 3, 9)  # one residual unit per dilation, in every block
    kernel_size: int = 7  # residual units and the outer convs
    num_quantizers: int = 8  # n_q; 8 x log2(1024) x 75 Hz = 6 kbps
    codebook_size: int = 1024
    separable: bool = False  # depthwise-separable convs (TinyStream)
    weight_norm: bool = True
    ema_decay: float = 0.99  # codebook EMA decay
    dead_code_threshold: float = 2.0  # EMA usage (vectors per step) under which a code restarts
    quantizer_dropout: bool = True  # train with a random number of quantizers per batch

    def __post_init__(self) -> None:
        if self.codebook_size < 2 or self.num_quantizers < 1:
            raise ValueError("codebook_size must be >= 2 and num_quantizers >= 1")
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"strides must be positive, got {self.strides}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass(frozen=True)
class TinyStreamConfig(SoundStreamConfig):
    """SoundStream with separable convolutions and a 256x hop at 16 kHz (TinyStream defaults)."""

    sample_rate: int = 16000
    channels: int = 16
    dim: int = 128
    strides: tuple[int, ...] = (4, 4, 4, 4)
    num_quantizers: int = 6
    separable: bool = True


@dataclass
class CodecOutput:
    """Result of ``SoundStream.forward``.

    audio: ``(B, 1, T)`` float reconstruction at ``cfg.sample_rate``, same ``T`` as the input.
    codes: ``(B, num_quantizers, frames)`` int64, ``frames = ceil(T / hop_length)``.
    commit_loss: scalar raw commitment loss (weight it in the task config).
    num_quantizers: quantizers used for this batch.
    """

    audio: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    num_quantizers: int


class ResidualUnit(nn.Module):
    """``x + conv1x1(ELU(conv_k,dil(ELU(x))))``: ``(B, N, T)`` -> ``(B, N, T)``, causal."""

    def __init__(self, channels: int, *, dilation: int, kernel_size: int, **conv) -> None:
        super().__init__()
        self.conv1 = CausalConv1d(channels, channels, kernel_size, dilation=dilation, **conv)
        self.conv2 = CausalConv1d(channels, channels, 1, **conv)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x), state)), state)


class EncoderBlock(nn.Module):
    """Residual units at ``in_ch`` then a strided causal conv: ``(B, N, T)`` -> ``(B, 2N, T/S)``."""

    def __init__(
        self, in_ch: int, out_ch: int, *, stride: int, dilations, kernel_size, **conv
    ) -> None:
        super().__init__()
        self.units = nn.ModuleList(
            ResidualUnit(in_ch, dilation=d, kernel_size=kernel_size, **conv) for d in dilations
        )
        self.down = CausalConv1d(in_ch, out_ch, 2 * stride, stride=stride, **conv)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        for unit in self.units:
            x = unit(x, state)
        return self.down(F.elu(x), state)


class DecoderBlock(nn.Module):
    """Causal transposed conv then residual units: ``(B, 2N, T)`` -> ``(B, N, T*S)``."""

    def __init__(
        self, in_ch: int, out_ch: int, *, stride: int, dilations, kernel_size, **conv
    ) -> None:
        super().__init__()
        self.up = CausalConvTranspose1d(in_ch, out_ch, 2 * stride, stride=stride, **conv)
        self.units = nn.ModuleList(
            ResidualUnit(out_ch, dilation=d, kernel_size=kernel_size, **conv) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(F.elu(x))
        for unit in self.units:
            x = unit(x)
        return x


def _conv_kwargs(cfg: SoundStreamConfig) -> dict[str, bool]:
    return {"separable": cfg.separable, "weight_norm": cfg.weight_norm}


def _blocks(
    block: type[EncoderBlock] | type[DecoderBlock],
    widths: list[int],
    strides: tuple[int, ...],
    cfg: SoundStreamConfig,
) -> nn.ModuleList:
    """One ``block`` per stride, block ``i`` from ``widths[i]`` to ``widths[i + 1]`` channels:
    the encoder's downsampling stack, or (reversed widths and strides) the decoder's mirror."""
    return nn.ModuleList(
        block(
            widths[i],
            widths[i + 1],
            stride=s,
            dilations=cfg.dilations,
            kernel_size=cfg.kernel_size,
            **_conv_kwargs(cfg),
        )
        for i, s in enumerate(strides)
    )


class SoundStreamEncoder(nn.Module):
    """``(B, 1, T)`` (``T`` a multiple of the hop) -> ``(B, dim, T / hop)``; streams with state."""

    def __init__(self, cfg: SoundStreamConfig) -> None:
        super().__init__()
        conv = _conv_kwargs(cfg)
        widths = [cfg.channels * 2**i for i in range(len(cfg.strides) + 1)]
        self.conv_in = CausalConv1d(1, widths[0], cfg.kernel_size, **conv)
        self.blocks = _blocks(EncoderBlock, widths, cfg.strides, cfg)
        self.conv_out = CausalConv1d(widths[-1], cfg.dim, 3, **conv)

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        x = self.conv_in(x, state)
        for block in self.blocks:
            x = block(x, state)
        return self.conv_out(F.elu(x), state)


class SoundStreamDecoder(nn.Module):
    """``(B, dim, F)`` -> ``(B, 1, F * hop)``."""

    def __init__(self, cfg: SoundStreamConfig) -> None:
        super().__init__()
        conv = _conv_kwargs(cfg)
        widths = [cfg.channels * 2**i for i in range(len(cfg.strides) + 1)][::-1]
        self.conv_in = CausalConv1d(cfg.dim, widths[0], cfg.kernel_size, **conv)
        self.blocks = _blocks(DecoderBlock, widths, cfg.strides[::-1], cfg)
        self.conv_out = CausalConv1d(widths[-1], 1, cfg.kernel_size, **conv)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for block in self.blocks:
            x = block(x)
        return self.conv_out(F.elu(x))


@register_model("soundstream", SoundStreamConfig, family="codec")
class SoundStream(nn.Module):
    """Causal conv encoder -> residual VQ -> causal transposed-conv decoder.

    ``forward(wav: (B, T) or (B, 1, T) float at cfg.sample_rate, num_quantizers=None)
    -> CodecOutput``. In training mode with ``quantizer_dropout`` and ``num_quantizers=None`` the
    batch uses a random number of quantizers in ``[1, n_q]`` and the codebooks are EMA-updated.
    """

    def __init__(self, cfg: SoundStreamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SoundStreamEncoder(cfg)
        self.quantizer = ResidualVQ(
            dim=cfg.dim,
            num_quantizers=cfg.num_quantizers,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            dead_code_threshold=cfg.dead_code_threshold,
            quantizer_dropout=cfg.quantizer_dropout,
        )
        self.decoder = SoundStreamDecoder(cfg)

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    def bitrate(self, num_quantizers: int | None = None) -> float:
        """Bits per second: quantizers x log2(codebook_size) x frame rate (exact)."""
        n = self.cfg.num_quantizers if num_quantizers is None else num_quantizers
        return n * math.log2(self.cfg.codebook_size) * self.cfg.frame_rate

    def _as_batch(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() == 2:
            wav = wav[:, None]
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(
                f"expected mono audio (B, T) or (B, 1, T), got {tuple(wav.shape)}; "
                "downmix multi-channel audio first"
            )
        if not wav.is_floating_point():
            raise ValueError(f"expected float audio in [-1, 1], got dtype {wav.dtype}")
        return wav

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        wav = self._as_batch(wav)
        extra = -wav.shape[-1] % self.hop_length  # right-pad: causal, so earlier codes unchanged
        return F.pad(wav, (0, extra)) if extra else wav

    def forward(self, wav: torch.Tensor, num_quantizers: int | None = None) -> CodecOutput:
        """``wav: (B, T) or (B, 1, T)`` float at ``cfg.sample_rate`` -> ``CodecOutput``
        (``audio: (B, 1, T)``, ``codes: (B, n, ceil(T / hop))``)."""
        length = wav.shape[-1]
        z = self.encoder(self._pad(wav))  # (B, D, F)
        q = self.quantizer(z, num_quantizers)
        audio = self.decoder(q.quantized)[..., :length]  # (B, 1, T)
        return CodecOutput(
            audio=audio, codes=q.codes, commit_loss=q.commit_loss, num_quantizers=q.num_quantizers
        )

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """``wav: (B, T) or (B, 1, T)`` -> codes ``(B, n, ceil(T / hop))`` int64."""
        return self.quantizer.encode(self.encoder(self._pad(wav)), num_quantizers)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes: (B, n, F)`` (any ``n <= n_q``) -> ``(B, 1, F * hop)`` float audio."""
        return self.decoder(self.quantizer.decode(codes))

    @torch.no_grad()
    def encode_stream(
        self, chunks: Iterable[torch.Tensor], num_quantizers: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Streaming encode: yield ``(B, n, len(chunk) / hop)`` codes per chunk.

        Every chunk (``(B, T_i)`` or ``(B, 1, T_i)``) must have ``T_i`` a multiple of
        ``hop_length``. Each causal conv keeps its left context in a per-stream cache, so the
        concatenated codes equal ``encode`` on the concatenated audio.
        """
        state: StreamState = {}
        for chunk in chunks:
            chunk = self._as_batch(chunk)
            if chunk.shape[-1] % self.hop_length:
                raise ValueError(
                    f"stream chunks must be a multiple of hop_length={self.hop_length} samples, "
                    f"got {chunk.shape[-1]}; buffer the audio and pad only the last chunk"
                )
            yield self.quantizer.encode(self.encoder(chunk, state), num_quantizers)


@register_model("tinystream", TinyStreamConfig, family="codec")
class TinyStream(SoundStream):
    """SoundStream with depthwise-separable convs at 16 kHz (``TinyStreamConfig``)."""


def _register_presets() -> None:
    for name, c, d in (("tiny", 16, 256), ("small", 16, 512), ("base", 32, 512)):
        cfg = SoundStreamConfig(channels=c, dim=d)
        register_preset(
            f"soundstream-{name}",
            "soundstream",
            cfg,
            f"SoundStream 24 kHz, C={c}, D={d}, 8 x 1024 codes, 6 kbps at 8 quantizers",
        )
    for name, c, d, nq, k in (
        ("ultra_tiny", 4, 64, 2, 256),
        ("tiny", 8, 128, 4, 512),
        ("small", 12, 128, 4, 1024),
        ("medium", 16, 128, 5, 1024),
        ("full", 16, 128, 6, 1024),
    ):
        cfg = TinyStreamConfig(channels=c, dim=d, num_quantizers=nq, codebook_size=k)
        kbps = nq * math.log2(k) * cfg.frame_rate / 1000
        register_preset(
            f"tinystream-{name}",
            "tinystream",
            cfg,
            f"TinyStream 16 kHz separable, C={c}, D={d}, {nq} x {k} codes, {kbps:.3g} kbps",
        )


_register_presets()

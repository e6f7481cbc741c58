"""Causal (optionally weight-normalised, optionally depthwise-separable) 1-D convolutions.

Shared by the codec encoder/decoder (SoundStream, Zeghidour et al. 2021, arXiv 2107.03312) and
usable by any causal model. The padding scheme follows facebookresearch/encodec
``encodec/modules/conv.py`` (``SConv1d`` / ``SConvTranspose1d`` with ``causal=True``): all padding
on the left, ``kernel_eff - stride`` samples, so ``T`` samples (a multiple of ``stride``) give
exactly ``T / stride`` frames and frame ``t`` only sees samples ``< (t + 1) * stride``.

Streaming: ``CausalConv1d.forward(x, state)`` with a ``state`` dict replaces the zero left-padding
by the last ``kernel_eff - stride`` input samples of the previous chunk (cached in ``state`` under
the module's id), so feeding a signal chunk by chunk (each chunk a multiple of the stride) gives
the same output as one call on the whole signal. A fresh ``{}`` starts a new stream; the state
lives in the caller, never in the module, so one model serves many streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

StreamState = dict[int, torch.Tensor]


def _wn(module: nn.Module, enabled: bool) -> nn.Module:
    return _weight_norm(module) if enabled else module


class _MaybeSeparable(nn.Module):
    """One (optionally weight-normalised) conv ``conv``, or, with ``separable``, a depthwise
    ``kernel_size`` conv ``depthwise`` (groups = ``C_in``, no bias) then a pointwise 1x1 conv
    ``pointwise`` (MobileNet-style). ``conv_type`` is ``nn.Conv1d`` or ``nn.ConvTranspose1d``;
    ``conv_kwargs`` (stride, dilation) go to the ``kernel_size`` conv."""

    def __init__(
        self,
        conv_type: type[nn.Conv1d] | type[nn.ConvTranspose1d],
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        separable: bool,
        weight_norm: bool,
        **conv_kwargs: int,
    ) -> None:
        super().__init__()
        self.separable = separable
        if separable:
            self.depthwise = _wn(
                conv_type(
                    in_channels,
                    in_channels,
                    kernel_size,
                    groups=in_channels,
                    bias=False,
                    **conv_kwargs,
                ),
                weight_norm,
            )
            self.pointwise = _wn(nn.Conv1d(in_channels, out_channels, 1), weight_norm)
        else:
            self.conv = _wn(
                conv_type(in_channels, out_channels, kernel_size, **conv_kwargs), weight_norm
            )

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x)) if self.separable else self.conv(x)


class CausalConv1d(_MaybeSeparable):
    """Causal conv: ``(B, C_in, T)`` -> ``(B, C_out, T // stride)`` for ``T`` a multiple of stride.

    ``separable=True`` makes it a depthwise ``kernel_size`` conv (groups = ``C_in``) followed by a
    pointwise 1x1 conv (MobileNet-style), as TinyStream uses to cut parameters and FLOPs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        separable: bool = False,
        weight_norm: bool = True,
    ) -> None:
        kernel_eff = (kernel_size - 1) * dilation + 1
        if kernel_eff < stride:
            raise ValueError(f"kernel {kernel_size} (dilation {dilation}) < stride {stride}")
        super().__init__(
            nn.Conv1d,
            in_channels,
            out_channels,
            kernel_size,
            separable=separable and kernel_size > 1,
            weight_norm=weight_norm,
            stride=stride,
            dilation=dilation,
        )
        self.kernel_eff = kernel_eff
        self.stride = stride
        self.pad = kernel_eff - stride

    def forward(self, x: torch.Tensor, state: StreamState | None = None) -> torch.Tensor:
        """``x: (B, C_in, T)``; ``state``: a stream's cache dict (see module docstring) or None."""
        if state is None:
            x = F.pad(x, (self.pad, 0))
        elif self.pad > 0:
            cache = state.get(id(self))
            if cache is None:  # the stream starts with the same zeros as the offline padding
                cache = x.new_zeros(x.shape[0], x.shape[1], self.pad)
            x = torch.cat([cache, x], dim=-1)  # (B, C_in, pad + T)
            state[id(self)] = x[..., x.shape[-1] - self.pad :]
        return self._conv(x)


class CausalConvTranspose1d(_MaybeSeparable):
    """Causal transposed conv: ``(B, C_in, T)`` -> ``(B, C_out, T * stride)``.

    The ``kernel_size - stride`` trailing samples (which would depend on future frames in a
    streaming decoder) are cropped, as encodec's ``SConvTranspose1d(causal=True)`` does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int,
        separable: bool = False,
        weight_norm: bool = True,
    ) -> None:
        if kernel_size < stride:
            raise ValueError(f"kernel {kernel_size} < stride {stride}")
        super().__init__(
            nn.ConvTranspose1d,
            in_channels,
            out_channels,
            kernel_size,
            separable=separable,
            weight_norm=weight_norm,
            stride=stride,
        )
        self.trim = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, T)`` -> ``(B, C_out, T * stride)``."""
        y = self._conv(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y

"""Operation counts of one forward pass, in the conventions sound-classification papers report.

``torch.utils.flop_counter.FlopCounterMode`` counts matrix-like ops (convolutions, matmuls) as
2 FLOPs per multiply-accumulate (MAC) and ignores element-wise ops. Papers mostly report MACs and
call them FLOPs; ACDNet (Mohaimenuzzaman et al., Pattern Recognition 2023, arXiv 2103.03483) goes
one step further. Its reference implementation (mohaimenz/acdnet ``torch/resources/calculator.py``,
read for understanding) counts, and the paper reports as "FLOPs":

- one per multiply-accumulate of every convolution and linear layer (bias adds included: the
  linear head's 50 adds are the only ones in ACDNet, whose convs have no bias);
- one per output element of every ReLU;
- ``kh * kw`` per output element of every max/average pool;
- nothing for batch norm (it folds into the preceding convolution at inference).

:func:`count_ops` returns the three parts separately; :func:`count_flops` returns one number in a
named convention: ``"macs"`` (the usual one), ``"flops"`` (FlopCounterMode's raw 2-per-MAC count)
or ``"acdnet"`` (the paper's). With ``"acdnet"`` the ACDNet preset gives 544.4M (paper: 544M) and
Micro-ACDNet 14.82M (paper: 14.82M); their MACs alone are 541.9M and 14.29M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

Convention = Literal["macs", "flops", "acdnet"]


@dataclass(frozen=True)
class OpCount:
    """Operations of one forward pass (batch as given in ``example``)."""

    macs: int  # multiply-accumulates of convolutions and matmuls (FlopCounterMode count / 2)
    activations: int  # ReLU output elements (one comparison each)
    pooling: int  # pooled output elements x pooling window size

    @property
    def acdnet_flops(self) -> int:
        """The ACDNet paper's "FLOPs": MACs + ReLU outputs + pooling window reads."""
        return self.macs + self.activations + self.pooling


def _numel(shape: Any) -> int:
    if isinstance(shape, (tuple, list)) and shape and not isinstance(shape[0], int):
        shape = shape[0]  # (values, indices) of max_pool2d_with_indices
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _relu_ops(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return _numel(out_shape)


def _pool_ops(x_shape: Any, kernel_size: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
    ks = list(kernel_size) if isinstance(kernel_size, (tuple, list)) else [kernel_size]
    if len(ks) == 1:
        ks = ks * 2  # a single size means a square window
    return _numel(out_shape) * int(ks[0]) * int(ks[1])


_ELEMENTWISE = {
    aten.relu: _relu_ops,
    aten.relu_: _relu_ops,
    aten.max_pool2d: _pool_ops,
    aten.max_pool2d_with_indices: _pool_ops,
    aten.avg_pool2d: _pool_ops,
}
_RELU = (aten.relu, aten.relu_)


def count_ops(model: nn.Module, example: torch.Tensor) -> OpCount:
    """Count one forward pass of ``model(example)`` in eval mode without gradients.

    ``example`` is a real input (for ACDNet ``(1, 30225)`` float at 20 kHz); counts scale with its
    batch size. The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_ELEMENTWISE) as counter:
            with torch.no_grad():
                model(example)
    finally:
        model.train(was_training)
    per_op = counter.get_flop_counts()["Global"]
    relu = sum(v for k, v in per_op.items() if k in _RELU)
    pool = sum(v for k, v in per_op.items() if k in _ELEMENTWISE and k not in _RELU)
    matrix = sum(v for k, v in per_op.items() if k not in _ELEMENTWISE)
    return OpCount(macs=matrix // 2, activations=relu, pooling=pool)


def count_flops(model: nn.Module, example: torch.Tensor, convention: Convention = "macs") -> int:
    """Operations of ``model(example)``: ``"macs"`` (multiply-accumulates, the default),
    ``"flops"`` (2 per MAC, FlopCounterMode's own count) or ``"acdnet"`` (the ACDNet paper's
    count, see the module docstring)."""
    ops = count_ops(model, example)
    if convention == "macs":
        return ops.macs
    if convention == "flops":
        return 2 * ops.macs
    if convention == "acdnet":
        return ops.acdnet_flops
    raise ValueError(f"unknown convention {convention!r}; use 'macs', 'flops' or 'acdnet'")

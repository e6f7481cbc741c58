"""ONNX graph of a ``codec``-family model: the encoder + quantizer (Ray-free; written by
``models/onnx_export.py``).

SoundStream / TinyStream (Zeghidour et al. 2021, arXiv 2107.03312): the deployable half of the
codec, the part that runs on the sending device. Input ``wav: (batch, samples)`` float32 at the
model's rate, ``samples`` a multiple of ``hop_length`` (pad the tail with zeros as
``CodecPipeline`` does); output ``codes: (batch, num_quantizers, frames)`` int64, all quantizers
(residual VQ: the first ``n`` rows are the codes of an ``n``-quantizer stream). Batch and sample
axes are dynamic. The nearest-codeword search is an ``ArgMin`` over squared distances, so FP32
codes equal torch's except where two codewords are (almost) equidistant: float summation order
differs between the runtimes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.onnx_export import OnnxGraph


class CodecEncoderGraph(nn.Module):
    """``wav: (B, T)`` (``T`` a multiple of the hop) -> codes ``(B, n_q, T / hop)`` int64."""

    def __init__(self, codec: nn.Module) -> None:
        super().__init__()
        self.encoder = codec.encoder
        self.quantizer = codec.quantizer

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(wav[:, None]))


def graph(model: nn.Module, meta: dict[str, Any]) -> OnnxGraph:
    """Encoder + quantizer on waveforms, with the stream parameters as metadata."""
    cfg = model.cfg
    return OnnxGraph(
        module=CodecEncoderGraph(model),
        example=torch.randn(2, 8 * cfg.hop_length) * 0.1,
        input_name="wav",
        output_name="codes",
        dynamic_axes={"wav": {0: "batch", 1: "samples"}, "codes": {0: "batch", 2: "frames"}},
        metadata={
            "sample_rate": str(cfg.sample_rate),
            "hop_length": str(cfg.hop_length),
            "num_quantizers": str(cfg.num_quantizers),
            "codebook_size": str(cfg.codebook_size),
        },
    )

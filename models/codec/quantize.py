"""Vector quantisation with EMA codebooks, and residual VQ with quantizer dropout.

SoundStream (Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec",
arXiv 2107.03312, Sec. 3.3 and Algorithm 1): ``n_q`` quantizers each code the residual left by
the previous ones; codebooks are updated by exponential moving averages (van den Oord et al.
2017, appendix; decay 0.99) instead of a codebook loss; codes whose EMA usage falls below a
threshold are restarted with random encoder outputs of the current batch; during training a
random number of quantizers ``n in [1, n_q]`` is used per batch ("quantizer dropout") so one model
serves every bitrate. Read for understanding (not copied): facebookresearch/encodec
``encodec/quantization/core_vq.py`` and descriptinc/descript-audio-codec ``dac/nn/quantize.py``.

Codebooks, usage counts and EMA sums are buffers, not parameters: no optimiser touches them, and
they are saved in the checkpoint's ``state_dict``. The encoder is trained through the
straight-through estimator plus the commitment loss, which is returned *unweighted*; its weight
(``DEFAULT_COMMITMENT_WEIGHT`` = 0.25 in the paper's setup) belongs to the task config.

EMA statistics are updated from the local batch only; a data-parallel trainer must all-reduce
them (or broadcast the buffers) itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_COMMITMENT_WEIGHT = 0.25  # the task config's default weight for ``commit_loss``


@dataclass
class QuantizedOutput:
    """Result of ``ResidualVQ.forward``.

    quantized: ``(B, D, T)`` sum of the selected codewords (straight-through gradient to ``z``).
    codes: ``(B, num_quantizers, T)`` int64 codebook indices.
    commit_loss: scalar, mean over the used quantizers of ``mse(residual_i, codeword_i)``
        (unweighted; gradient reaches the encoder only).
    num_quantizers: how many quantizers were used.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    commit_loss: torch.Tensor
    num_quantizers: int


class EMAVectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` vectors of size ``dim``, learned by EMA (no parameters)."""

    def __init__(
        self,
        *,
        dim: int,
        codebook_size: int,
        decay: float = 0.99,
        dead_code_threshold: float = 2.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.dead_code_threshold = dead_code_threshold
        self.eps = eps
        self.register_buffer("codebook", torch.randn(codebook_size, dim))
        # EMA usage starts at zero, so the first training step restarts every code with batch
        # vectors: a data-dependent initialisation for free.
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_sum", torch.zeros(codebook_size, dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (N, dim)`` -> nearest code index ``(N,)`` (squared Euclidean distance)."""
        cb = self.codebook
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ cb.t() + cb.pow(2).sum(1)[None]  # (N, K)
        return dist.argmin(dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Any-shape int codes -> codewords with a trailing ``dim`` axis."""
        return F.embedding(codes, self.codebook)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA update of usage and codebook from ``x: (N, dim)`` assigned to ``codes: (N,)``,
        then restart of dead codes. Call only in training."""
        x = x.detach().float()
        counts = torch.bincount(codes, minlength=self.codebook_size).to(x.dtype)  # (K,)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, x)  # (K, dim)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        self.restart_dead_codes(x)

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor) -> int:
        """Replace codes with EMA usage below the threshold by random rows of ``x: (N, dim)``.

        Restarted codes get usage = threshold (a grace step) and a consistent EMA sum.
        Returns how many codes were restarted.
        """
        dead = self.cluster_size < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or x.shape[0] == 0:
            return 0
        pick = torch.randint(0, x.shape[0], (n_dead,), device=x.device)
        self.codebook[dead] = x[pick].to(self.codebook.dtype)
        self.cluster_size[dead] = self.dead_code_threshold
        self.embed_sum[dead] = self.codebook[dead] * self.dead_code_threshold
        return n_dead


class ResidualVQ(nn.Module):
    """Residual vector quantiser: ``num_quantizers`` EMA codebooks applied to successive residuals.

    ``forward(z: (B, dim, T), num_quantizers=None) -> QuantizedOutput``; in training mode the
    codebooks are EMA-updated and, with ``quantizer_dropout``, ``num_quantizers=None`` draws a
    random count in ``[1, n_q]`` for the batch. In eval mode ``None`` means all quantizers.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_quantizers: int,
        codebook_size: int,
        decay: float = 0.99,
        dead_code_threshold: float = 2.0,
        quantizer_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.quantizer_dropout = quantizer_dropout
        self.layers = nn.ModuleList(
            EMAVectorQuantizer(
                dim=dim,
                codebook_size=codebook_size,
                decay=decay,
                dead_code_threshold=dead_code_threshold,
            )
            for _ in range(num_quantizers)
        )

    def _count(self, num_quantizers: int | None, sample: bool) -> int:
        if num_quantizers is None:
            if sample and self.training and self.quantizer_dropout:
                return int(torch.randint(1, self.num_quantizers + 1, ()))
            return self.num_quantizers
        if not 1 <= num_quantizers <= self.num_quantizers:
            raise ValueError(
                f"num_quantizers must be in [1, {self.num_quantizers}], got {num_quantizers}"
            )
        return num_quantizers

    def forward(self, z: torch.Tensor, num_quantizers: int | None = None) -> QuantizedOutput:
        """``z: (B, dim, T)`` encoder output -> ``QuantizedOutput`` (see its docstring)."""
        n = self._count(num_quantizers, sample=True)
        b, d, t = z.shape
        flat = z.transpose(1, 2).reshape(b * t, d)  # (B*T, D)
        residual = flat.detach()
        total = torch.zeros_like(residual)
        codes, losses = [], []
        for i, layer in enumerate(self.layers[:n]):
            idx = layer.encode(residual)  # (B*T,)
            q = layer.decode(idx)  # (B*T, D)
            # Commitment: pull the encoder's residual toward the (fixed) codeword. The residual
            # is rebuilt from ``flat`` so that the gradient of every stage reaches the encoder.
            live_residual = flat - total if i else flat
            losses.append(F.mse_loss(live_residual, q.detach()))
            if self.training:
                layer.ema_update(residual, idx)
            total = total + q
            residual = residual - q
            codes.append(idx.view(b, t))
        # Value is exactly the codeword sum (so decode(codes) == quantized bit for bit); the
        # gradient passes straight through to z.
        quantized = total + (flat - flat.detach())
        return QuantizedOutput(
            quantized=quantized.view(b, t, d).transpose(1, 2),  # (B, D, T)
            codes=torch.stack(codes, dim=1),  # (B, n, T)
            commit_loss=torch.stack(losses).mean(),
            num_quantizers=n,
        )

    @torch.no_grad()
    def encode(self, z: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """``z: (B, dim, T)`` -> codes ``(B, n, T)`` int64 (no codebook update, no dropout)."""
        n = self._count(num_quantizers, sample=False)
        b, d, t = z.shape
        residual = z.transpose(1, 2).reshape(b * t, d)  # (B*T, D)
        codes = []
        for layer in self.layers[:n]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            codes.append(idx.view(b, t))
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes: (B, n, T)`` with ``n <= num_quantizers`` -> ``(B, dim, T)`` codeword sum."""
        if codes.dim() != 3 or not 1 <= codes.shape[1] <= self.num_quantizers:
            raise ValueError(
                f"codes must be (B, n, T) with 1 <= n <= {self.num_quantizers}, "
                f"got {tuple(codes.shape)}"
            )
        total = None
        for i in range(codes.shape[1]):
            q = self.layers[i].decode(codes[:, i])  # (B, T, D)
            total = q if total is None else total + q
        return total.transpose(1, 2)  # (B, D, T)

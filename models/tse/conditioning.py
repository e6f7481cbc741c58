"""USEF-style reference conditioning: per-band cross-attention, then optional FiLM.

Zeng, Zhang, Wang & Li 2024, "USEF-TSE: Universal Speaker Embedding Free Target Speaker
Extraction", arXiv 2409.02615. Reference implementation: ZBang/USEF-TSE (``USEF-TFGridNet``),
read for understanding, not copied. USEF encodes the mixture and the reference with the same
encoder and lets mixture frames attend to reference frames (cross multi-head attention), so no
pre-trained speaker-embedding model is needed.

Choices here (documented because the paper leaves room):

- Cross-attention runs **per band, over time**: for each of the ``Q`` sub-bands, the mixture's
  ``T`` frames (queries) attend to that same band's ``T_ref`` reference frames (keys/values). The
  attention weights are shared across bands (one ``nn.MultiheadAttention`` per injection point),
  so a band only ever compares like with like (same frequency range). Pre-LayerNorm on both sides,
  result added residually to the mixture features.
- FiLM (Perez et al. 2018) uses a reference embedding: the reference features averaged over
  frames and bands, ``(B, N)``, mapped by a Linear to a per-channel scale and shift
  ``h * (1 + gamma) + beta``. That Linear starts at zero, so FiLM starts as the identity.
- The module is re-applied before each TF-GridNet block listed in ``inject_at``, each with its
  own weights; the reference features are the encoder output, computed once.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceConditioning(nn.Module):
    """Inject reference information into mixture features.

    ``forward(h: (B, T, Q, N), ref: (B, T_ref, Q, N), ref_emb: (B, N)) -> (B, T, Q, N)``.
    """

    def __init__(self, *, feature_dim: int, heads: int, film: bool) -> None:
        super().__init__()
        if feature_dim % heads:
            raise ValueError(f"feature_dim {feature_dim} must be divisible by heads {heads}")
        self.norm_q = nn.LayerNorm(feature_dim)
        self.norm_kv = nn.LayerNorm(feature_dim)
        self.attn = nn.MultiheadAttention(feature_dim, heads, batch_first=True)
        self.film = nn.Linear(feature_dim, 2 * feature_dim) if film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, ref: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
        b, t, q, n = h.shape
        t_ref = ref.shape[1]
        query = self.norm_q(h).transpose(1, 2).reshape(b * q, t, n)  # (B*Q, T, N)
        kv = self.norm_kv(ref).transpose(1, 2).reshape(b * q, t_ref, n)  # (B*Q, T_ref, N)
        att = self.attn(query, kv, kv, need_weights=False)[0]
        h = h + att.view(b, q, t, n).transpose(1, 2)  # (B, T, Q, N)
        if self.film is not None:
            gamma, beta = self.film(ref_emb).chunk(2, dim=-1)  # (B, N) each
            h = h * (1 + gamma[:, None, None]) + beta[:, None, None]
        return h

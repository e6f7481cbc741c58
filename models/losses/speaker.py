"""Speaker-classification losses: cross-entropy over margin-head logits.

The margin itself lives in the head (``models/speaker/heads.py``: ``AAMSoftmax`` / ``AMSoftmax``
already return ``s * cos(theta_y + m)`` / ``s * (cos(theta_y) - m)`` for the target); the loss is
the plain softmax cross-entropy on those logits, as in WeSpeaker / 3D-Speaker.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy: ``logits: (B, C)`` from a head, ``labels: (B,)`` int64 -> scalar.

    Computed in float32 (logits scaled by ``s`` ~ 32 overflow half precision in the softmax).
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (B, C) and labels (B,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def top1_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose argmax is the label: ``scores: (B, C)``, ``labels: (B,)`` -> scalar.

    Pass margin-free scores (``head.cosine(emb)``); margin logits understate accuracy.
    """
    return (scores.argmax(dim=-1) == labels).float().mean()

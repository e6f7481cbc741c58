"""Sound-classification training task (ACDNet on ESC-50), Ray-free.

The recipe follows ACDNet (Mohaimenuzzaman et al., Pattern Recognition 2023, arXiv 2103.03483)
and its reference implementation (mohaimenz/acdnet ``torch/trainer.py``): between-class mixed
examples with soft labels (made by ``datasets/esc50.py``; Tokozume et al., ICLR 2018) and a
KL-divergence loss between the soft label and the softmax output (``reduction="batchmean"``).
Optimisation (SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1 with warm-up and x0.1 steps
at 30/60/90% of training) is the training loop's job.

Batches:

- training: ``{"wav": (B, T) float32 at the model's rate (T = cfg.input_length, 30,225 for
  ACDNet), "label": (B, C) float soft labels summing to 1, or (B,) int64 class ids}``;
- evaluation may also pass ``"wav": (B, K, T)``: K test crops per clip, whose softmax outputs
  are averaged before the loss and the accuracy (the paper's 10-crop protocol).

``forward`` returns ``{"loss", "acc"}``; accuracy compares the argmax of the prediction with
the argmax of the label (the dominant class of a mixture).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_task
from models.tasks.base import Task


@dataclass(frozen=True)
class ClassifyTaskConfig:
    num_classes: int = 50  # must equal the model's num_classes (ESC-50: 50)
    loss: Literal["kl", "ce"] = "kl"  # kl: KLDiv(soft label || softmax), BC learning; ce: soft CE
    mixup_alpha: float = 0.0  # > 0: plain mixup of the batch in the task, r ~ Beta(a, a); 0 off
    # (the paper's BC mixing happens in the data pipeline, datasets/esc50.make_training_batch)
    label_smoothing: float = 0.0  # for integer labels only


@register_task("classify", ClassifyTaskConfig)
class ClassifyTask(Task):
    sweep_metric = ("val_acc", "max")

    def __init__(self, model: nn.Module, cfg: ClassifyTaskConfig) -> None:
        super().__init__()
        model_classes = getattr(getattr(model, "cfg", None), "num_classes", cfg.num_classes)
        if cfg.num_classes < 2 or model_classes != cfg.num_classes:
            raise ValueError(
                f"classify task has num_classes={cfg.num_classes} but the model predicts "
                f"{model_classes}; set both to the number of classes in the data (>= 2)"
            )
        if cfg.loss not in ("kl", "ce"):
            raise ValueError(f"loss must be 'kl' or 'ce', got {cfg.loss!r}")
        if cfg.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 disables), got {cfg.mixup_alpha}")
        self.cfg = cfg
        self.model = model

    def soft_labels(self, label: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int ids or ``(B, C)`` soft labels -> ``(B, C)`` float32 probabilities."""
        c = self.cfg.num_classes
        if label.dim() == 1 and not label.is_floating_point():
            if label.numel() and (int(label.min()) < 0 or int(label.max()) >= c):
                raise ValueError(f"labels must lie in 0..{c - 1}, got {label.tolist()[:8]}")
            eps = self.cfg.label_smoothing
            return F.one_hot(label.long(), c).float() * (1 - eps) + eps / c
        if label.dim() != 2 or label.shape[-1] != c:
            raise ValueError(
                f"label must be (B,) int class ids or (B, {c}) soft labels, got "
                f"{tuple(label.shape)} {label.dtype}"
            )
        return label.float()

    def _mixup(self, wav: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One ratio per batch, partner = a random permutation (Zhang et al. 2018, arXiv 1710.09412).
        a = self.cfg.mixup_alpha
        r = torch.distributions.Beta(a, a).sample().to(wav.device)
        perm = torch.randperm(wav.shape[0], device=wav.device)
        return r * wav + (1 - r) * wav[perm], r * target + (1 - r) * target[perm]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch["wav"]``: ``(B, T)`` or ``(B, K, T)`` crops; ``batch["label"]``: ``(B,)`` int or
        ``(B, C)`` soft -> ``{"loss": (), "acc": ()}``."""
        wav, target = batch["wav"], self.soft_labels(batch["label"])
        if wav.dim() == 3:  # (B, K, T): average the crops' probabilities
            b, k, t = wav.shape
            logits = self.model(wav.reshape(b * k, t)).float()  # (B*K, C)
            log_prob = logits.log_softmax(-1).reshape(b, k, -1).logsumexp(1) - torch.log(
                torch.tensor(float(k), device=logits.device)
            )  # (B, C): log of the mean probability
        else:
            if self.training and self.cfg.mixup_alpha > 0:
                wav, target = self._mixup(wav, target)
            log_prob = self.model(wav).float().log_softmax(-1)  # (B, C)
        if self.cfg.loss == "kl":
            loss = F.kl_div(log_prob, target, reduction="batchmean")
        else:
            loss = -(target * log_prob).sum(-1).mean()
        with torch.no_grad():
            acc = (log_prob.argmax(-1) == target.argmax(-1)).float().mean()
        return {"loss": loss, "acc": acc}

"""Speaker-embedding training task: backbone + margin head + cross-entropy.

The recipe follows 3D-Speaker / WeSpeaker VoxCeleb training (AAM-softmax with a margin warmed up
over the first steps; Deng et al. 2019, arXiv 1801.07698). Large-margin fine-tuning (Thienpondt
et al. 2021, arXiv 2010.11255) is the same task with a larger margin, longer crops and a lower
learning rate: a config (``ray_jobs/configs/*_lm.yaml``), not a different code path. It continues
the base run's margin head, so it keeps the base run's label space (same speakers, same speed
factors); ``train.init_from`` refuses a head that does not fit (``train_state_mismatch``).

Batches: ``{"feats": (B, T, feat_dim) float32 fbank, "label": (B,) int64 class ids}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models.losses.speaker import margin_cross_entropy
from models.registry import register_task
from models.speaker.heads import HeadConfig, build_head
from models.tasks.base import Task


@dataclass(frozen=True)
class SpeakerTaskConfig:
    head: HeadConfig = field(default_factory=HeadConfig)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    num_classes: int = 0  # set by the job from the training manifest (speakers x speed factors)


@register_task("speaker", SpeakerTaskConfig)
class SpeakerTask(Task):
    # what a head's class ids mean: speaker index + speed-factor index * number of speakers
    label_meta_keys = ("speakers", "speed_factors")

    def __init__(self, model: nn.Module, cfg: SpeakerTaskConfig) -> None:
        super().__init__()
        if cfg.num_classes < 2:
            raise ValueError(
                f"speaker task needs num_classes >= 2 (got {cfg.num_classes}); the training job "
                "sets it from the number of training speakers"
            )
        self.cfg = cfg
        self.model = model
        self.head = build_head(cfg.head, model.cfg.embed_dim, cfg.num_classes)
        self.margin_schedule = cfg.head.scheduler()

    def on_step(self, step: int) -> None:
        if hasattr(self.head, "set_margin"):
            self.head.set_margin(self.margin_schedule.value(step))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        emb = self.model(batch["feats"])  # (B, D)
        logits = self.head(emb.float(), batch["label"])  # (B, C), margin on the target class
        loss = margin_cross_entropy(logits, batch["label"], self.cfg.label_smoothing)
        with torch.no_grad():
            # accuracy on the margin-free cosine logits is what tells training is working
            acc = (self.head.cosine(emb.float()).argmax(-1) == batch["label"]).float().mean()
        return {"loss": loss, "acc": acc}

    def train_state_mismatch(self, state: dict[str, Any]) -> list[str]:
        problems = super().train_state_mismatch(state)
        saved = next(
            (v for k, v in state.items() if k.startswith("head.") and getattr(v, "ndim", 0) == 2),
            None,
        )
        if problems and saved is not None:
            problems.insert(
                0,
                f"the checkpoint's head has {saved.shape[0]} classes x {saved.shape[1]} dims, "
                f"this run's {self.cfg.num_classes} classes x {self.model.cfg.embed_dim} dims "
                "(classes = training speakers x len(data.augment.speed_factors))",
            )
        return problems

"""Speaker-embedding training task: backbone + margin head + cross-entropy.

The recipe follows 3D-Speaker / WeSpeaker VoxCeleb training (AAM-softmax with a margin warmed up
over the first steps; Deng et al. 2019, arXiv 1801.07698). Large-margin fine-tuning (Thienpondt
et al. 2021, arXiv 2010.11255) is the same task with a larger margin, longer crops and a lower
learning rate: a config (``ray_jobs/configs/*_lm.yaml``), not a different code path.

Batches: ``{"feats": (B, T, feat_dim) float32 fbank, "label": (B,) int64 class ids}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

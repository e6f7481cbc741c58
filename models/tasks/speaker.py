"""Speaker-embedding training task: backbone + margin head + cross-entropy.

The recipe follows 3D-Speaker / WeSpeaker VoxCeleb training (AAM-softmax with a margin warmed up
over the first steps; Deng et al. 2019, arXiv 1801.07698). Large-margin fine-tuning (Thienpondt
et al. 2021, arXiv 2010.11255) is the same task with a larger margin, longer crops and a lower
learning rate: a config (``ray_jobs/configs/*_lm.yaml``), not a different code path. It continues
the base run's margin head, so it keeps the base run's label space (same speakers, same speed
factors); ``train.init_from`` refuses a head that does not fit (``train_state_mismatch``).

Batches: ``{"feats": (B, T, feat_dim) float32 fbank, "label": (B,) int64 class ids}``.

Validation is verification on held-out speakers, as the final evaluation
(``ray_jobs/evaluate/speaker.py``) does it: held-out rows ``{"feats": (1, T, feat_dim) whole
utterance, "speaker": (1,) int64, "index": (1,) int64}`` are embedded (``eval_outputs``), and
``eval_summary`` scores a fixed, seeded list of same/different-speaker trials between them by
cosine (``models.pipelines.scoring``): ``val_eer`` and ``val_min_dcf`` (p_target 0.01) every
epoch, ``val_eer`` being what ranks epochs and sweep trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.losses.speaker import margin_cross_entropy
from models.metrics import verification_metrics
from models.pipelines.scoring import cosine_pairs, make_pairs
from models.registry import register_task
from models.speaker.heads import HeadConfig, build_head
from models.tasks.base import Task


@dataclass(frozen=True)
class SpeakerTaskConfig:
    head: HeadConfig = field(default_factory=HeadConfig)
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    num_classes: int = 0  # set by the job from the training manifest (speakers x speed factors)
    # Trials scored by the per-epoch validation: all pairs of the held-out utterances up to this
    # many, else a subsample seeded by 0 (half same-speaker), the same every epoch.
    val_trials: int = 20_000


@register_task("speaker", SpeakerTaskConfig)
class SpeakerTask(Task):
    # what a head's class ids mean: speaker index + speed-factor index * number of speakers
    label_meta_keys = ("speakers", "speed_factors")
    sweep_metric = ("val_eer", "min")

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

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """None: held-out speakers are not classes of the head; see ``eval_summary``."""
        return {}

    @torch.no_grad()
    def eval_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """-> ``{"embedding": (B, D) L2-normalised float32, "speaker", "index": (B,)}``."""
        emb = F.normalize(self.model(batch["feats"]).float(), dim=-1)  # (B, D)
        return {"embedding": emb, "speaker": batch["speaker"], "index": batch["index"]}

    def eval_summary(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """EER and minDCF (p_target 0.01) over the trials of the held-out embeddings, put back
        in ``index`` order so the seeded trial list is the same on every rank and epoch."""
        if not outputs:
            return {}
        order = np.argsort(outputs["index"], kind="stable")
        emb, speakers = outputs["embedding"][order], outputs["speaker"][order]
        pairs, target = make_pairs(speakers, max_trials=self.cfg.val_trials, seed=0)
        scores = cosine_pairs(emb[pairs[:, 0]], emb[pairs[:, 1]])
        m = verification_metrics(scores, target)
        return {"eer": float(m["eer"]), "min_dcf": float(m["min_dcf_0.01"])}

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

"""3D-Speaker's training step, run from the installed ``speakerlab`` package, and the voxray
experiment that reproduces it.

``ReferenceTrainer`` assembles what ``speakerlab/bin/train.py`` builds from a VoxCeleb recipe
(``egs/voxceleb/sv-cam++/conf/cam++.yaml`` and its siblings): ``nn.Sequential(embedding_model,
CosineClassifier)``, ``torch.optim.SGD`` over all of its parameters, ``ArcMarginLoss``,
``WarmupCosineScheduler`` and ``MarginScheduler``, and ``step`` is the body of its ``train``
loop (schedulers stepped with the global iteration, forward, loss, backward, optimizer step).
Nothing of speakerlab is copied: every component is the package's own.

``voxray_overrides(recipe, steps_per_epoch)`` is the same recipe in our experiment config
(epochs converted to optimizer steps): the step-parity test
(``tests/ray_jobs/test_reference_parity.py``) trains both from the same weights on the same
fbank batches and compares the loss at every step, and ``ray_jobs.bench.reference_budget``
trains both on the same data for the same time. Ray-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ReferenceRecipe:
    """The training section of a 3D-Speaker VoxCeleb recipe; defaults: ``sv-cam++/cam++.yaml``."""

    num_epoch: int = 60
    lr: float = 0.1  # max_lr of WarmupCosineScheduler
    min_lr: float = 1e-4
    warmup_epoch: float = 5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    scale: float = 32.0  # ArcMarginLoss
    margin: float = 0.2  # MarginScheduler final_margin
    easy_margin: bool = False
    margin_start_epoch: float = 15  # MarginScheduler increase_start_epoch (margin 0 before)
    margin_fix_epoch: float = 25  # MarginScheduler fix_epoch (final margin from here on)
    margin_increase: str = "exp"  # MarginScheduler increase_type


def _speakerlab() -> Any:
    try:
        import speakerlab.loss.margin_loss as margin_loss
        import speakerlab.models.campplus.classifier as classifier
        import speakerlab.process.scheduler as scheduler
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "3D-Speaker's speakerlab is not installed: `uv sync` installs it (dev group)"
        ) from exc
    return margin_loss, classifier, scheduler


class ReferenceTrainer:
    """speakerlab's components for ``recipe``, around ``embedding_model`` (a speakerlab model).

    ``step_per_epoch`` converts the recipe's epochs to steps, as train.py does with
    ``len(train_dataloader)``.
    """

    def __init__(
        self,
        embedding_model: nn.Module,
        embed_dim: int,
        num_classes: int,
        recipe: ReferenceRecipe,
        step_per_epoch: int,
    ) -> None:
        margin_loss, classifier, scheduler = _speakerlab()
        self.embedding_model = embedding_model
        self.classifier = classifier.CosineClassifier(embed_dim, out_neurons=num_classes)
        self.model = nn.Sequential(embedding_model, self.classifier)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
        self.criterion = margin_loss.ArcMarginLoss(
            scale=recipe.scale, margin=recipe.margin, easy_margin=recipe.easy_margin
        )
        self.lr_scheduler = scheduler.WarmupCosineScheduler(
            self.optimizer,
            min_lr=recipe.min_lr,
            max_lr=recipe.lr,
            warmup_epoch=recipe.warmup_epoch,
            fix_epoch=recipe.num_epoch,
            step_per_epoch=step_per_epoch,
        )
        self.margin_scheduler = scheduler.MarginScheduler(
            self.criterion,
            increase_start_epoch=recipe.margin_start_epoch,
            fix_epoch=recipe.margin_fix_epoch,
            step_per_epoch=step_per_epoch,
            initial_margin=0.0,
            final_margin=recipe.margin,
            increase_type=recipe.margin_increase,
        )
        self.model.train()

    def step(self, iter_num: int, feats: torch.Tensor, labels: torch.Tensor) -> float:
        """One iteration of speakerlab's ``train``: ``feats (B, T, F)``, ``labels (B,)`` -> loss."""
        self.lr_scheduler.step(iter_num)
        self.margin_scheduler.step(iter_num)
        output = self.model(feats)
        loss = self.criterion(output, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def margin(self) -> float:
        return float(self.margin_scheduler.get_margin())


def voxray_overrides(recipe: ReferenceRecipe, steps_per_epoch: int) -> dict[str, Any]:
    """``recipe`` as ``--set`` overrides of our experiment config (dotted keys): the same
    optimizer, LR schedule, margin head and margin schedule, epochs converted to steps."""
    head = "task.config.head"
    return {
        "optim.name": "sgd",
        "optim.lr": recipe.lr,
        "optim.min_lr": recipe.min_lr,
        "optim.momentum": recipe.momentum,
        "optim.nesterov": recipe.nesterov,
        "optim.weight_decay": recipe.weight_decay,
        "optim.schedule": "cosine",
        "optim.warmup_mode": "from_min",
        "optim.warmup_steps": round(recipe.warmup_epoch * steps_per_epoch),
        "optim.grad_clip": 0.0,  # train.py clips nothing
        "train.epochs": recipe.num_epoch,
        f"{head}.type": "aam",
        f"{head}.scale": recipe.scale,
        f"{head}.margin": recipe.margin,
        f"{head}.easy_margin": recipe.easy_margin,
        f"{head}.margin_fallback": "3dspeaker",
        f"{head}.margin_warmup_mode": recipe.margin_increase,
        f"{head}.margin_warmup_start": round(recipe.margin_start_epoch * steps_per_epoch),
        f"{head}.margin_warmup_steps": round(
            (recipe.margin_fix_epoch - recipe.margin_start_epoch) * steps_per_epoch
        ),
    }

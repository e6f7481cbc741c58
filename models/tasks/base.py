"""Task = model + training-only parts + the loss computation, Ray-free.

A task is an ``nn.Module`` holding the registered model (``task.model``, what checkpoints store)
and the parts only training needs (margin heads, discriminators). The one training loop
(``ray_jobs/train/loop.py``) drives every task through the same small surface:

- ``param_groups()``: ``{optimizer name: parameters}``, one optimizer per entry (``"main"`` for
  most tasks; ``"generator"`` and ``"discriminator"`` for GAN tasks);
- ``train_step(batch, ctx)``: forward, ``ctx.backward(name, loss)`` and ``ctx.step(name)``;
  returns scalar metrics. The default implementation calls ``ctx.forward(batch)`` (which runs
  ``forward`` through the DDP wrapper under autocast) and optimises ``out["loss"]``;
- ``eval_step(batch)``: metrics without gradients, averaged over the validation batches;
- ``eval_outputs(batch)`` / ``eval_summary(outputs)``: validation that needs the whole held-out
  set at once (a speaker task's EER over trials between utterances): per-example outputs of each
  batch, which the loop gathers from every worker, then metrics over all of them;
- ``on_step(step)``: schedules that live in the task (margin warm-up, curriculum);
- ``train_state()`` / ``load_train_state()``: the training-only parts, saved in the checkpoint's
  ``train_state`` entry that ``load_model`` ignores; ``train_state_mismatch(state)`` says why a
  saved one does not fit (fine-tuning refuses it rather than silently starting those parts fresh);
- ``label_meta_keys``: the checkpoint ``meta`` entries that say what the training-only parts'
  class ids mean (a speaker head's speakers and speed factors), compared by fine-tuning;
- ``sweep_metric``: the reported validation metric and mode (``"min"``/``"max"``) that ranks
  epochs (the best checkpoint becomes ``model.pt``; early stopping) and sweep trials unless told
  otherwise, so a new task brings its own and ``tune/`` keeps no per-task table. Its data builder
  (``ray_jobs/train/data/<task>.py``) must give the validation rows that report it every epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


class StepContext(Protocol):
    """What the loop hands to ``train_step`` (implemented in ray_jobs/train/loop.py)."""

    step: int  # optimizer steps taken so far

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def backward(self, name: str, loss: torch.Tensor) -> None: ...

    def step_optimizer(self, name: str) -> bool: ...


class Task(nn.Module):
    model: nn.Module
    sweep_metric: tuple[str, str] = ("val_loss", "min")
    label_meta_keys: tuple[str, ...] = ()

    def param_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"main": [p for p in self.parameters() if p.requires_grad]}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, float]:
        out = ctx.forward(batch)
        ctx.backward("main", out["loss"])
        ctx.step_optimizer("main")
        return {k: float(v.detach()) for k, v in out.items() if v.dim() == 0}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        out = self(batch)
        return {k: float(v) for k, v in out.items() if v.dim() == 0}

    @torch.no_grad()
    def eval_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example outputs of one held-out batch, each ``(B, ...)``, for
        :meth:`eval_summary`; ``{}`` (the default) when the task needs none."""
        return {}

    def eval_summary(self, outputs: dict[str, np.ndarray]) -> dict[str, float]:
        """Metrics over the whole held-out set: ``outputs`` holds every :meth:`eval_outputs` key
        concatenated over all batches of all workers (rows in no particular order: carry an
        index to restore one). The loop reports them as ``val_<key>``."""
        return {}

    def on_step(self, step: int) -> None:
        """Called by the loop before each optimizer step's batches."""

    def train_state(self) -> dict[str, Any]:
        """Training-only parts (everything but ``self.model``) as tensors/primitives."""
        return {
            k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("model.")
        }

    def train_state_mismatch(self, state: dict[str, Any]) -> list[str]:
        """Why ``state`` cannot load into this task's training-only parts; empty when it can."""
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        problems = [f"{k} is missing" for k in sorted(set(own) - set(state))]
        for k, v in own.items():
            saved = state.get(k)
            if isinstance(saved, torch.Tensor) and saved.shape != v.shape:
                problems.append(f"{k} is {tuple(saved.shape)}, this run's {tuple(v.shape)}")
        return problems

    def load_train_state(self, state: dict[str, Any]) -> None:
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        missing = sorted(set(own) - set(state))
        if missing:
            raise KeyError(f"train state lacks {missing[:5]}")
        self.load_state_dict({**self.state_dict(), **{k: state[k] for k in own}})

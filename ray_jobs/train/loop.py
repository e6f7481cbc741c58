"""The one training loop, Ray-free: optimizers, schedules, AMP, accumulation, checkpoints.

``ray_jobs/train/worker.py`` adapts it to Ray Train (dataset shard, ``ray.train.report``, restore from
``ray.train.get_checkpoint``); tests and single-GPU runs drive it directly. It knows nothing about
speakers or codecs: tasks (``models/tasks``) supply ``param_groups`` / ``train_step``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from models.checkpoint import read_checkpoint, save_checkpoint
from models.config import ConfigError
from models.tasks.base import Task
from ray_jobs.train.experiment import ExperimentConfig, OptimConfig

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
# report(metrics, checkpoint_dir or None): called once per epoch (and at a time-budget stop)
ReportFn = Callable[[dict[str, float], Path | None], None]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on CUDA devices that support it, full fp32 on CPU."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step``: linear warm-up, then decay."""
    floor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        if cfg.warmup_mode == "constant":
            return cfg.warmup_factor
        if cfg.warmup_mode == "from_min":  # 3D-Speaker's WarmupCosineScheduler: min_lr at step 0
            return floor + (1 - floor) * step / cfg.warmup_steps
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant" or total_steps <= cfg.warmup_steps:
        return 1.0
    if cfg.schedule == "step":  # milestones are fractions of all steps, warm-up included
        return cfg.gamma ** sum(step >= m * total_steps for m in cfg.milestones)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return max(floor, floor**progress) if floor > 0 else 1.0  # exponential from 1 to floor


@dataclass
class TrainState:
    epoch: int = 0  # epochs fully completed
    step: int = 0  # optimizer steps taken
    samples: int = 0  # training examples seen (this worker)
    resumed_from: str = ""  # checkpoint this run resumed from (empty for a fresh start)


class _Context:
    """The ``StepContext`` handed to ``Task.train_step``: AMP, accumulation, clipping."""

    def __init__(self, loop: TrainLoop) -> None:
        self.loop = loop
        self.step = 0
        self.micro = 0  # micro-batch index inside the current accumulation window

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        with self.loop.autocast():
            return self.loop.module(batch)

    def backward(self, name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite {name} loss {float(loss.detach())} at step {self.step}"
            )
        loss = loss / self.loop.accum
        scaler = self.loop.scalers.get(name)
        (scaler.scale(loss) if scaler else loss).backward()

    def step_optimizer(self, name: str) -> bool:
        if self.micro + 1 < self.loop.accum:
            return False
        opt = self.loop.optimizers[name]
        if self.loop.sync_grads:
            _all_reduce_grads(opt)
        scaler = self.loop.scalers.get(name)
        if scaler:
            scaler.unscale_(opt)
        clip = self.loop.optim_cfgs[name].grad_clip
        if clip > 0:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        return True


class TrainLoop:
    """Drive ``task`` over epochs of batches.

    ``module`` is the task or its DDP wrapper (what ``forward`` runs through); ``task`` is the
    unwrapped task (what is checkpointed). ``total_steps`` sizes the LR schedule.
    """

    def __init__(
        self,
        task: Task,
        exp: ExperimentConfig,
        *,
        device: torch.device,
        total_steps: int,
        module: nn.Module | None = None,
        output_dir: str | os.PathLike | None = None,
        rank: int = 0,
        world_size: int = 1,
        meta: dict[str, Any] | None = None,
        sync_grads: bool = False,
    ) -> None:
        """``sync_grads``: average gradients across ranks before every optimizer step. For
        tasks with several optimizers (GANs), whose discriminator passes run outside
        ``forward`` and therefore outside a DDP wrapper; ``module`` is then the bare task."""
        self.task = task
        self.sync_grads = sync_grads and world_size > 1
        self.module = module if module is not None else task
        self.exp = exp
        self.device = device
        self.total_steps = max(1, total_steps)
        self.rank = rank
        self.world_size = world_size
        self.accum = max(1, exp.train.grad_accum)
        self.output_dir = Path(output_dir) if output_dir else None
        self.meta = dict(meta or {})
        self.amp_dtype = resolve_precision(exp.train.precision, device)
        groups = task.param_groups()
        unknown = sorted(set(exp.optim.groups) - set(groups))
        if unknown:
            raise ValueError(
                f"optim.groups names {unknown}, but task {type(task).__name__} has the "
                f"optimizers {sorted(groups)}"
            )
        # one OptimConfig per optimizer: exp.optim with that optimizer's overrides applied
        self.optim_cfgs = {name: exp.optim.for_group(name) for name in groups}
        self.optimizers = {
            name: build_optimizer(params, self.optim_cfgs[name]) for name, params in groups.items()
        }
        self.scalers = {
            name: torch.amp.GradScaler("cuda")
            for name in self.optimizers
            if self.amp_dtype == torch.float16
        }
        self.state = TrainState()
        self.ctx = _Context(self)
        self._t0 = time.monotonic()

    # -- helpers ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _set_lr(self) -> float:
        """Apply each optimizer's schedule at the current step; returns the first one's lr."""
        lrs = []
        for name, opt in self.optimizers.items():
            cfg = self.optim_cfgs[name]
            lr = cfg.lr * lr_factor(self.state.step, self.total_steps, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            lrs.append(lr)
        return lrs[0]

    def _out_of_time(self) -> bool:
        budget = self.exp.train.max_minutes
        stop = budget > 0 and (time.monotonic() - self._t0) > budget * 60
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
            stop = bool(flag.item() > 0)
        return stop

    def _write_progress(self, phase: str, extra: dict[str, Any] | None = None) -> None:
        """A small JSON per rank (pid, epoch, step): progress for humans and fault tests."""
        if self.output_dir is None:
            return
        path = self.output_dir / "progress" / f"rank{self.rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "rank": self.rank,
            "phase": phase,
            "epoch": self.state.epoch,
            "step": self.state.step,
            "time": time.time(),
            **(extra or {}),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metrics: dict[str, float] | None = None) -> Path:
        train_state = {
            "task": self.task.train_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "epoch": self.state.epoch,
            "step": self.state.step,
        }
        meta = {
            **self.meta,
            "experiment": self.exp.to_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "metrics": dict(metrics or {}),
            "resumed_from": self.state.resumed_from,
            "saved_at": time.time(),
        }
        return save_checkpoint(self.task.model, path, meta=meta, train_state=train_state)

    def restore(self, path: str | os.PathLike) -> None:
        """Resume model, training-only parts, optimizers and counters from a checkpoint."""
        ckpt = read_checkpoint(path)
        self.task.model.load_state_dict(ckpt["state_dict"])
        ts = ckpt.get("train_state") or {}
        if ts:
            self.task.load_train_state(ts["task"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(ts["optimizers"][name])
            for name, scaler in self.scalers.items():
                if name in ts.get("scalers", {}):
                    scaler.load_state_dict(ts["scalers"][name])
            self.state.epoch = int(ts["epoch"])
            self.state.step = int(ts["step"])
        self.state.resumed_from = str(path)
        log.info("resumed from %s at epoch %d, step %d", path, self.state.epoch, self.state.step)

    def init_from(self, path: str | os.PathLike) -> None:
        """Fine-tuning start (``train.init_from``): the model's weights and, unless
        ``train.init_head`` is false, the training-only parts (margin head) from the checkpoint's
        ``train_state``; optimizers, schedules and counters start fresh.

        Raises ``ConfigError`` when those parts do not fit this run (other shapes, or class ids
        that mean something else): never a silently re-initialised head.
        """
        ckpt = read_checkpoint(path)
        state = None
        if self.exp.train.init_head:
            state = (ckpt.get("train_state") or {}).get("task")
            if state is None:
                raise ConfigError(
                    f"train.init_from={path} holds no training-only parts (train_state), so "
                    "there is no trained head to continue: it was not written by ray_jobs.train "
                    "(an import or a stripped copy?). Set train.init_head=false to train a "
                    "fresh head on its weights."
                )
            problems = self.task.train_state_mismatch(state)
            problems += self._label_meta_mismatch(ckpt.get("meta") or {})
            if problems:
                raise ConfigError(
                    f"train.init_from={path}: its trained head does not fit this run: "
                    + "; ".join(problems)
                    + ". Fine-tune in the label space of the run that wrote it (same training "
                    "speakers and data.augment.speed_factors, as campplus_lm.yaml keeps "
                    "campplus.yaml's), or set train.init_head=false to start a fresh head and "
                    "discard the trained one."
                )
        self.task.model.load_state_dict(ckpt["state_dict"])
        if state is not None:
            self.task.load_train_state(state)
            log.info("initialised model weights and training-only parts from %s", path)
        else:
            log.warning(
                "init_from %s: model weights only; train.init_head is false, so the "
                "training-only parts (margin head) start fresh",
                path,
            )

    def _label_meta_mismatch(self, saved: dict[str, Any]) -> list[str]:
        """The ``task.label_meta_keys`` entries of the checkpoint's meta that differ from this
        run's: equal shapes whose class ids mean other speakers or speed factors."""
        problems = []
        for key in self.task.label_meta_keys:
            if key in saved and key in self.meta and list(saved[key]) != list(self.meta[key]):
                ours, theirs = list(self.meta[key]), list(saved[key])
                shown = (
                    f"{theirs} vs this run's {ours}"
                    if len(ours) + len(theirs) <= 16
                    else f"{len(theirs)} entries vs this run's {len(ours)}, not the same list"
                )
                problems.append(f"its meta {key!r} differs ({shown})")
        return problems

    # -- the loop --------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """``task.eval_step`` averaged over ``batches`` (weighted by batch size), as ``val_*``.

        With several workers each evaluates its own shard and the sums are all-reduced, so every
        rank returns the same numbers (what Tune's schedulers compare between trials).
        """
        self.task.eval()
        # per-key sums and counts: a task may leave a metric out of a batch that has none of
        # its cases (TSE's target-absent scores), and that must not drag its mean to zero
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for batch in _batches_on(batches, self.device):
            bs = int(next(iter(batch.values())).shape[0])
            with self.autocast():
                metrics = self.task.eval_step(batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
                counts[k] = counts.get(k, 0.0) + bs
        self.task.train()
        keys = sorted(sums)
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            # every rank must reduce the same keys: gather the union first
            names: list[list[str]] = [[] for _ in range(self.world_size)]
            dist.all_gather_object(names, keys)
            keys = sorted({k for ks in names for k in ks})
            t = torch.tensor(
                [sums.get(k, 0.0) for k in keys] + [counts.get(k, 0.0) for k in keys],
                device=self.device,
                dtype=torch.float64,
            )
            dist.all_reduce(t)
            values = t.tolist()
            sums = dict(zip(keys, values[: len(keys)], strict=True))
            counts = dict(zip(keys, values[len(keys) :], strict=True))
        return {f"val_{k}": sums[k] / counts[k] for k in keys if counts.get(k, 0) > 0}

    def run(
        self,
        epoch_batches: Callable[[int], Iterable[Batch]],
        report: ReportFn | None = None,
        checkpoint_dir: Callable[[], Path] | None = None,
        val_batches: Callable[[], Iterable[Batch]] | None = None,
    ) -> dict[str, float]:
        """Train from ``self.state.epoch`` to ``exp.train.epochs``.

        ``epoch_batches(epoch)`` yields the batches of one epoch on this worker.
        ``val_batches()``, when given, yields held-out batches scored after every epoch
        (``val_*`` metrics in the report: what Tune's ASHA compares).
        ``checkpoint_dir()`` returns a fresh directory for an epoch checkpoint (rank 0 saves
        ``model.pt`` into it before ``report`` is called with that directory).
        """
        exp = self.exp
        self.module.train()
        last: dict[str, float] = {}
        while self.state.epoch < exp.train.epochs:
            epoch = self.state.epoch
            sums: dict[str, float] = {}
            n_batches = 0
            t_epoch = time.monotonic()
            stopped = False
            self._write_progress("train")
            for batch in _batches_on(epoch_batches(epoch), self.device):
                if self.ctx.micro == 0:
                    self.task.on_step(self.state.step)
                    lr = self._set_lr()
                self.ctx.step = self.state.step
                metrics = self.task.train_step(batch, self.ctx)
                bs = int(next(iter(batch.values())).shape[0])
                self.state.samples += bs
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_batches += 1
                self.ctx.micro += 1
                if self.ctx.micro >= self.accum:
                    self.ctx.micro = 0
                    self.state.step += 1
                    if self.state.step % exp.train.log_every == 0:
                        rate = self.state.samples / max(1e-9, time.monotonic() - self._t0)
                        avg = {k: v / n_batches for k, v in sums.items()}
                        if self.rank == 0:
                            log.info(
                                "epoch %d step %d/%d lr %.2e %s | %.1f samples/s/worker",
                                epoch + 1,
                                self.state.step,
                                self.total_steps,
                                lr,
                                " ".join(f"{k} {v:.4f}" for k, v in avg.items()),
                                rate,
                            )
                        self._write_progress("train")
                    if self._out_of_time():
                        stopped = True
                        break
            if n_batches == 0:
                raise RuntimeError(
                    f"epoch {epoch + 1} produced no batches on rank {self.rank}: the training "
                    "set is smaller than one batch per worker; lower train.batch_size"
                )
            last = {f"train_{k}": v / n_batches for k, v in sums.items()}
            last.update(
                epoch=float(epoch + (0 if stopped else 1)),
                step=float(self.state.step),
                epoch_seconds=time.monotonic() - t_epoch,
            )
            if not stopped:
                self.state.epoch += 1
            if val_batches is not None:
                last.update(self.validate(val_batches()))
            ckpt_dir = None
            if checkpoint_dir is not None:
                ckpt_dir = checkpoint_dir()
                if self.rank == 0:
                    self.save(ckpt_dir / "model.pt", last)
            if report is not None:
                report(last, ckpt_dir if self.rank == 0 else None)
            if self.rank == 0:
                log.info(
                    "epoch %d done in %.1fs: %s",
                    epoch + 1,
                    last["epoch_seconds"],
                    " ".join(
                        f"{k} {v:.4f}" for k, v in last.items() if k.startswith(("train_", "val_"))
                    ),
                )
            if stopped:
                log.info("time budget of %.1f min reached; stopping", exp.train.max_minutes)
                break
        self._write_progress("done")
        return last


def _all_reduce_grads(opt: torch.optim.Optimizer) -> None:
    """Average this optimizer's gradients over all ranks (one flat all-reduce)."""
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _batches_on(batches: Iterable[Batch], device: torch.device) -> Iterator[Batch]:
    for batch in batches:
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}

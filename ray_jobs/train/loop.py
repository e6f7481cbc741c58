"""The one training loop, Ray-free: optimizers, schedules, AMP, accumulation, checkpoints.

``ray_jobs/train/worker.py`` adapts it to Ray Train (dataset shard, ``ray.train.report``, restore from
``ray.train.get_checkpoint``); tests and single-GPU runs drive it directly. It knows nothing about
speakers or codecs: tasks (``models/tasks``) supply ``param_groups`` / ``train_step`` and their
validation. Every epoch ends the same way: validation (``val_*``), the best epoch by the task's
``sweep_metric`` (``ray_jobs/train/logbook.py``), the checkpoint, the report, TensorBoard /
``metrics.csv`` / ``curves.png`` on rank 0, and early stopping (``train.early_stop_patience``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.checkpoint import atomic_write, read_checkpoint, save_checkpoint
from models.config import ConfigError
from models.tasks.base import Task
from ray_jobs.train.experiment import ExperimentConfig
from ray_jobs.train.logbook import BestTracker, Logbook
from ray_jobs.train.optim import build_optimizer, lr_factor, resolve_precision
from ray_jobs.train.resume import rng_state, set_rng_state

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
# report(metrics, checkpoint_dir or None): called once per epoch (and at a time-budget stop)
ReportFn = Callable[[dict[str, float], Path | None], None]


@dataclass
class TrainState:
    epoch: int = 0  # epochs fully completed
    step: int = 0  # optimizer steps taken
    # data position inside epoch `epoch`: batches of it already trained on (non-zero only
    # after a stop mid-epoch, the time budget's; a resumed run skips them)
    epoch_batch: int = 0
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
        self.best = BestTracker(*task.sweep_metric)  # the epoch model.pt is taken from
        self._warned_no_metric = False
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
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(info)))

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metrics: dict[str, float] | None = None) -> Path | None:
        """Write the checkpoint that :meth:`restore` continues from exactly: model, task parts,
        optimizers, GradScalers, counters, data position and every rank's RNG states.

        With several ranks every rank calls it (the RNG states are gathered) and rank 0 writes;
        returns the path on rank 0 and None elsewhere."""
        rng = self._gather(rng_state(self.device))
        if self.rank != 0:
            return None
        train_state = {
            "task": self.task.train_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "epoch": self.state.epoch,
            "step": self.state.step,
            "epoch_batch": self.state.epoch_batch,
            "rng": rng,  # one entry per rank
            "best": self.best.state_dict(),
        }
        meta = {
            **self.meta,
            "experiment": self.exp.to_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "epoch_batch": self.state.epoch_batch,
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
            self.state.epoch_batch = int(ts.get("epoch_batch", 0))
            rngs = ts.get("rng") or []
            if self.rank < len(rngs):
                set_rng_state(rngs[self.rank], self.device)
            else:  # a checkpoint of fewer ranks, or an older one
                log.warning(
                    "%s holds no RNG state for rank %d (%d saved): this rank's random draws "
                    "will differ from the stopped run's",
                    path,
                    self.rank,
                    len(rngs),
                )
            self.best.load_state_dict(ts.get("best") or {})
        self.state.resumed_from = str(path)
        log.info(
            "resumed from %s at epoch %d (+%d batches), step %d",
            path,
            self.state.epoch,
            self.state.epoch_batch,
            self.state.step,
        )

    def _gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (a collective when distributed)."""
        if self.world_size > 1 and dist.is_available() and dist.is_initialized():
            out: list[Any] = [None] * self.world_size
            dist.all_gather_object(out, obj)
            return out
        return [obj]

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
        """``task.eval_step`` averaged over ``batches`` (weighted by batch size) and
        ``task.eval_summary`` of the ``task.eval_outputs`` of all of them, as ``val_*``.

        With several workers each evaluates its own shard; the sums are all-reduced and the
        per-example outputs gathered, so every rank returns the same numbers (what Tune's
        schedulers compare between trials, and what early stopping decides on).
        """
        self.task.eval()
        # per-key sums and counts: a task may leave a metric out of a batch that has none of
        # its cases (TSE's target-absent scores), and that must not drag its mean to zero
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        outputs: dict[str, list[np.ndarray]] = {}
        for batch in _batches_on(batches, self.device):
            bs = int(next(iter(batch.values())).shape[0])
            with self.autocast():
                metrics = self.task.eval_step(batch)
                outs = self.task.eval_outputs(batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * bs
                counts[k] = counts.get(k, 0.0) + bs
            for k, v in outs.items():
                v = v.detach().float() if v.is_floating_point() else v.detach()
                outputs.setdefault(k, []).append(v.cpu().numpy())
        self.task.train()
        summary = self.task.eval_summary(self._gather_outputs(outputs))
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
        result = {f"val_{k}": sums[k] / counts[k] for k in keys if counts.get(k, 0) > 0}
        result.update({f"val_{k}": float(v) for k, v in summary.items()})
        return result

    def _gather_outputs(self, outputs: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """Per-key concatenation of ``outputs`` over batches and, with several workers, over
        all ranks (rank order); every rank gets the whole set."""
        parts = self._gather({k: np.concatenate(v) for k, v in outputs.items()})
        keys = sorted({k for p in parts for k in p})
        return {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}

    def run(
        self,
        epoch_batches: Callable[[int], Iterable[Batch]],
        report: ReportFn | None = None,
        checkpoint_dir: Callable[[], Path] | None = None,
        val_batches: Callable[[], Iterable[Batch]] | None = None,
        seek: Callable[[int, int], Iterable[Batch]] | None = None,
    ) -> dict[str, float]:
        """Train from ``self.state.epoch`` to ``exp.train.epochs``, or until early stopping.

        ``epoch_batches(epoch)`` yields the batches of one epoch on this worker.
        A run restored mid-epoch (``state.epoch_batch`` > 0, after a time-budget stop) skips the
        batches it already trained on: ``seek(epoch, start)``, when given, yields the batches of
        ``epoch`` from batch ``start`` on (a source that can start there without producing what
        it skips); otherwise the loop reads the first ``start`` batches and drops them.
        ``val_batches()``, when given, yields held-out batches scored after every epoch
        (``val_*`` metrics in the report: what Tune's ASHA compares).
        ``checkpoint_dir()`` returns a fresh directory for an epoch checkpoint (rank 0 saves
        ``model.pt`` into it before ``report`` is called with that directory).
        Each epoch's metrics also carry ``lr`` and, once the task's ``sweep_metric`` has been
        reported, ``best_epoch`` and ``epochs_since_best``; with ``train.early_stop_patience``
        = N > 0, training stops after N epochs in a row without a new best. With an
        ``output_dir``, rank 0 writes TensorBoard events, ``metrics.csv`` and ``curves.png``
        there (``ray_jobs/train/logbook.py``).
        """
        exp = self.exp
        self.module.train()
        last: dict[str, float] = {}
        book = None
        if self.rank == 0 and self.output_dir is not None:
            book = Logbook(
                self.output_dir,
                start_epoch=self.state.epoch,
                metric=self.best.metric,
                mode=self.best.mode,
            )
        while self.state.epoch < exp.train.epochs:
            epoch = self.state.epoch
            sums: dict[str, float] = {}
            window: dict[str, float] = {}  # sums since the last log line (per-step scalars)
            n_batches = n_window = 0
            t_epoch = time.monotonic()
            stopped = False
            skip = self.state.epoch_batch
            if not skip:
                source = epoch_batches(epoch)
            elif seek is not None:
                source = seek(epoch, skip)
            else:
                source = itertools.islice(epoch_batches(epoch), skip, None)
            self._write_progress("train")
            for batch in _batches_on(source, self.device):
                if self.ctx.micro == 0:
                    self.task.on_step(self.state.step)
                    lr = self._set_lr()
                self.ctx.step = self.state.step
                metrics = self.task.train_step(batch, self.ctx)
                bs = int(next(iter(batch.values())).shape[0])
                self.state.samples += bs
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                    window[k] = window.get(k, 0.0) + v
                n_batches += 1
                n_window += 1
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
                        if book is not None:
                            scalars = {f"train_{k}": v / n_window for k, v in window.items()}
                            book.step(self.state.step, {**scalars, "lr": lr})
                        window, n_window = {}, 0
                        self._write_progress("train")
                    if self._out_of_time():
                        stopped = True
                        break
            if n_batches == 0 and skip:  # the stop came right after the epoch's last batch
                self.state.epoch, self.state.epoch_batch = epoch + 1, 0
                continue
            if n_batches == 0:
                raise RuntimeError(
                    f"epoch {epoch + 1} produced no batches on rank {self.rank}: the training "
                    "set is smaller than one batch per worker; lower train.batch_size"
                )
            last = {f"train_{k}": v / n_batches for k, v in sums.items()}
            last.update(
                epoch=float(epoch + (0 if stopped else 1)),
                step=float(self.state.step),
                lr=lr,
                epoch_seconds=time.monotonic() - t_epoch,
            )
            self.state.epoch_batch = skip + n_batches if stopped else 0
            if not stopped:
                self.state.epoch += 1
            if val_batches is not None:
                last.update(self.validate(val_batches()))
            early = self._track_best(last)
            ckpt_dir = None
            if checkpoint_dir is not None:
                ckpt_dir = checkpoint_dir()
                self.save(ckpt_dir / "model.pt", last)  # every rank: it gathers RNG states
            if report is not None:
                report(last, ckpt_dir if self.rank == 0 else None)
            if book is not None:
                book.epoch(last)
            if self.rank == 0:
                log.info(
                    "epoch %d/%d done in %.1fs: %s | %s",
                    epoch + 1,
                    exp.train.epochs,
                    last["epoch_seconds"],
                    " ".join(
                        f"{k} {v:.4f}" for k, v in last.items() if k.startswith(("train_", "val_"))
                    ),
                    self.best.describe(),
                )
            if stopped:
                log.info("time budget of %.1f min reached; stopping", exp.train.max_minutes)
                break
            if early:
                log.info(
                    "early stop: %s has not improved for %d epochs; %s",
                    self.best.metric,
                    self.best.since,
                    self.best.describe(),
                )
                break
        if book is not None:
            book.close()
        self._write_progress("done")
        return last

    def _track_best(self, metrics: dict[str, float]) -> bool:
        """``self.best`` takes an epoch's ``metrics``; True when early stopping says stop."""
        if self.best.metric not in metrics and self.rank == 0 and not self._warned_no_metric:
            self._warned_no_metric = True
            log.warning(
                "%s is not reported (no validation data?): model.pt will be the last epoch "
                "and early stopping is off",
                self.best.metric,
            )
        return self.best.observe(metrics, self.exp.train.early_stop_patience)


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

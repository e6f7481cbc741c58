"""``train_loop_per_worker``: the thin Ray Train adapter around ``ray_jobs.train.loop.TrainLoop``.

Everything here is Ray plumbing: the dataset shard, the device and DDP wrapper Ray Train
prepares (gloo on CPU, NCCL on GPU, chosen by Ray, never hard-coded), ``ray.train.report`` with a
voxray checkpoint directory, and restoring from ``ray.train.get_checkpoint()`` after a worker
failure, which is how a killed worker resumes.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch

from models.registry import build_model, resolve_task
from ray_jobs.cli import configure_cli_logging
from ray_jobs.train.experiment import experiment_from_dict
from ray_jobs.train.loop import TrainLoop

log = logging.getLogger(__name__)


def build_task(exp_dict: dict[str, Any]):
    exp = experiment_from_dict(exp_dict)
    model = build_model(exp.model.name, exp.model.config)
    entry, task_cfg = resolve_task(exp.task.name, exp.task.config)
    return exp, entry.cls(model, task_cfg)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    configure_cli_logging()  # a worker process: its logs reach the driver through Ray
    exp, task = build_task(config["experiment"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    # One optimizer: DDP over the whole task (gradient all-reduce overlapped with backward).
    # Several (GAN tasks): their discriminator passes run outside forward(), where DDP cannot
    # see them, so the loop averages every optimizer's gradients itself before stepping.
    manual_sync = len(task.param_groups()) > 1
    module = ray.train.torch.prepare_model(
        task,
        parallel_strategy=None if manual_sync else "ddp",
        parallel_strategy_kwargs=None if manual_sync else {"find_unused_parameters": False},
    )
    loop = TrainLoop(
        task,
        exp,
        device=device,
        total_steps=config["total_steps"],
        module=module,
        output_dir=config["output_dir"],
        rank=rank,
        world_size=world,
        meta=config.get("meta"),
        sync_grads=manual_sync,
    )
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            loop.restore(Path(ckpt_dir) / "model.pt")
    elif exp.train.init_from:
        loop.init_from(exp.train.init_from)

    shard = ray.train.get_dataset_shard("train")

    def new_pass():
        return shard.iter_torch_batches(
            batch_size=exp.train.batch_size,
            local_shuffle_buffer_size=exp.data.shuffle_buffer or None,
            drop_last=True,
        )

    if config.get("single_pass"):
        # Dynamic data (TSE mixes) is one dataset for the whole run, read once: each epoch
        # takes its share of batches, so row ids (seeds, curriculum progress) never repeat.
        # After a restart the pass starts again from the first rows.
        stream = iter(new_pass())
        per_epoch = int(config["batches_per_epoch"])

        def epoch_batches(epoch: int):
            return itertools.islice(stream, per_epoch)
    else:

        def epoch_batches(epoch: int):
            return new_pass()

    val_batches = None
    if config.get("has_val"):
        val_shard = ray.train.get_dataset_shard("val")

        val_batch_size = config.get("val_batch_size") or exp.train.batch_size

        def val_batches():
            return val_shard.iter_torch_batches(batch_size=val_batch_size)

    def report(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    loop.run(
        epoch_batches,
        report=report,
        checkpoint_dir=lambda: Path(tempfile.mkdtemp()),
        val_batches=val_batches,
    )

"""``train_loop_per_worker``: the thin Ray Train adapter around ``ray_jobs.train.loop.TrainLoop``.

Everything here is Ray plumbing: the dataset shard, the device and DDP wrapper Ray Train
prepares (gloo on CPU, NCCL on GPU, chosen by Ray, never hard-coded), ``ray.train.report`` with a
voxray checkpoint directory, and restoring from ``ray.train.get_checkpoint()`` after a worker
failure (how a killed worker resumes) or from the checkpoint ``--resume`` names.

Epoch checkpoints are written to a scratch folder on the worker's local disk
(``voxray-ckpt-<run>-rank<r>-*`` under the system temp folder) that ``ray.train.report`` copies
into the run's storage; each is removed as soon as ``report`` returns, and the scratch folder
when the worker ends, by error too.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch

from datasets import storage
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


SCRATCH_PREFIX = "voxray-ckpt-"


def scratch_prefix(run_id: str, rank: int | None = None) -> str:
    """Name prefix of a worker's checkpoint scratch folder (the job sweeps the driver node's
    leftovers of its run, e.g. of a killed worker, by it)."""
    return f"{SCRATCH_PREFIX}{run_id}-" + ("" if rank is None else f"rank{rank}-")


@contextmanager
def checkpoint_scratch(run_id: str, rank: int) -> Iterator[Path]:
    """A worker's scratch folder for epoch checkpoints, removed when the block ends."""
    root = Path(tempfile.mkdtemp(prefix=scratch_prefix(run_id, rank)))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sync_logs(log_dir: Path, location: str, rank: int) -> None:
    """Upload a URI run's logs from this node: rank 0 its whole log folder, the other ranks
    their own progress file (each is written on the node the rank runs on)."""
    if rank == 0:
        storage.upload_tree(log_dir, location)
        return
    mine = log_dir / "progress" / f"rank{rank}.json"
    if mine.is_file():
        storage.upload_file(mine, storage.join(location, "progress", mine.name))


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
    # the run's logs (TensorBoard, metrics.csv, curves.png, progress/): in the run folder, or,
    # for a URI, in a folder on this node that is uploaded after each epoch's report
    location = config["output_dir"]
    log_dir = storage.stage_dir(location, "logs") if storage.is_uri(location) else location
    loop = TrainLoop(
        task,
        exp,
        device=device,
        total_steps=config["total_steps"],
        module=module,
        output_dir=log_dir,
        rank=rank,
        world_size=world,
        meta=config.get("meta"),
        sync_grads=manual_sync,
    )
    # the run's own latest checkpoint (after a worker failure, or a rerun in the same storage)
    # wins over the one --resume named when the job started
    checkpoint = ray.train.get_checkpoint() or config.get("resume_checkpoint")
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

    seek = None
    if config.get("single_pass"):
        # Dynamic data (TSE mixes) is one dataset for the whole run, read once: each epoch
        # takes its share of batches, so row ids (seeds, curriculum progress) never repeat.
        # The driver starts the dataset at the data position of the checkpoint it resumes
        # (`start_batch`, in this worker's batches); a newer checkpoint (a worker restarted
        # after a failure) skips the batches between the two by reading them.
        per_epoch = int(config["batches_per_epoch"])
        done = loop.state.epoch * per_epoch + loop.state.epoch_batch
        behind = done - int(config.get("start_batch", 0))
        if behind < 0:
            raise RuntimeError(
                f"the training data starts at batch {config.get('start_batch')} but the restored "
                f"checkpoint is at batch {done}"
            )
        if behind:
            log.warning("skipping %d already-trained batches of the mixing stream", behind)
        stream = itertools.islice(iter(new_pass()), behind, None)

        def epoch_batches(epoch: int):
            return itertools.islice(stream, per_epoch)

        def seek(epoch: int, start: int):
            return itertools.islice(stream, per_epoch - start)
    else:

        def epoch_batches(epoch: int):
            return new_pass()

    val_batches = None
    if config.get("has_val"):
        val_shard = ray.train.get_dataset_shard("val")

        val_batch_size = config.get("val_batch_size") or exp.train.batch_size

        def val_batches():
            return val_shard.iter_torch_batches(batch_size=val_batch_size)

    with checkpoint_scratch(config.get("run_id", "run"), rank) as scratch:

        def report(metrics: dict[str, float], ckpt_dir: Path | None) -> None:
            ckpt = ray.train.Checkpoint.from_directory(str(ckpt_dir)) if ckpt_dir else None
            try:
                ray.train.report(metrics, checkpoint=ckpt)  # copies ckpt_dir into storage
                if log_dir != location:
                    sync_logs(Path(log_dir), location, rank)
            finally:  # this epoch's folder, on every rank (others made one and left it empty)
                for path in scratch.iterdir():
                    shutil.rmtree(path, ignore_errors=True)

        loop.run(
            epoch_batches,
            report=report,
            checkpoint_dir=lambda: Path(tempfile.mkdtemp(dir=scratch)),
            val_batches=val_batches,
            seek=seek,
        )
        if log_dir != location:  # the last epoch's logs and the final progress ("done")
            sync_logs(Path(log_dir), location, rank)

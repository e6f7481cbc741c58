"""The order training reads packed shards in: a seeded global shuffle of row blocks per epoch.

A speaker-sorted corpus read one shard per task, mixed only by a trainer's local shuffle buffer,
gives batches of a handful of speakers, which starves margin-softmax losses of negatives and
skews BatchNorm statistics. Here mixing is a property of the plan, not of buffer luck: every
epoch ``e`` permutes all ``(shard, block of consecutive rows)`` units of the corpus under the
seed ``(seed, e)`` and cuts the permutation into read tasks of about ``rows_per_task`` rows, so
each task (and each batch made from it) is a random sample of the whole corpus. Blocks keep
some read locality (a task opens ``rows_per_task / block_rows`` files); in a speaker-interleaved
pack (``datasets.hdf5_shards.interleave_speakers``) consecutive rows are different speakers, so
a block costs no mixing. A pack in the old speaker-sorted order is read row by row
(``block_rows = 1``): still mixed, with more file opens; repacking restores the locality.

Only the plan (shard paths and row counts) crosses process boundaries; each task reads its rows
itself, so the corpus is streamed, never loaded. The same task of the same epoch always reads
the same rows, which is what makes a run reproducible and resumable at an epoch. This is the
WebDataset / MosaicML-streaming idea (shuffle shard pieces globally, not rows locally) on our
HDF5 shards. Ray-free; ``datasets/ray_data.py`` turns tasks into Ray Data reads.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.hdf5_shards import ShardError, ShardFiles, load_manifest

log = logging.getLogger(__name__)

BLOCK_ROWS = 8  # consecutive rows of a shard read together (interleaved packs)
ROWS_PER_TASK = 128  # rows one read task delivers: a batch-sized random sample
_SALT = 0x0D5E


@dataclass(frozen=True)
class ReadPlan:
    """Which rows each read task of each epoch reads (see the module docstring).

    ``shards``: absolute shard paths; ``rows``: rows per shard (manifest order); ``repeats``:
    times each row is read per epoch (crops per utterance), in ``repeats`` successive passes.
    """

    shards: tuple[str, ...]
    rows: tuple[int, ...]
    seed: int = 0
    block_rows: int = BLOCK_ROWS
    rows_per_task: int = ROWS_PER_TASK
    repeats: int = 1

    def __post_init__(self) -> None:
        if len(self.shards) != len(self.rows):
            raise ValueError("shards and rows must have one entry per shard")
        if not self.shards or sum(self.rows) == 0:
            raise ShardError("no rows to read: pack the training data first (ray_jobs.pack)")
        for name in ("block_rows", "rows_per_task", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_manifest(
        cls, manifest_path: str | Path, *, seed: int = 0, repeats: int = 1, **kw: Any
    ) -> ReadPlan:
        """The plan of a packed manifest; a speaker-sorted (older) pack is read row by row."""
        manifest = load_manifest(manifest_path)
        paths = ShardFiles.of_manifest(manifest_path).paths
        if manifest.get("order", "sorted") != "interleaved":
            log.warning(
                "%s is packed in speaker-sorted order (an older pack): it is read row by row "
                "to mix speakers, with more file opens; repack it (python -m ray_jobs.pack, or "
                "rerun training on the raw tree) for block reads",
                manifest_path,
            )
            kw["block_rows"] = 1
        rows = tuple(int(s["num_utterances"]) for s in manifest["shards"])
        return cls(tuple(paths), rows, seed=seed, repeats=repeats, **kw)

    @property
    def rows_per_epoch(self) -> int:
        return sum(self.rows) * self.repeats

    @property
    def units_per_task(self) -> int:
        return max(1, self.rows_per_task // self.block_rows)

    @property
    def num_tasks(self) -> int:
        """Read tasks per epoch."""
        return -(-len(_units(self.rows, self.block_rows)) * self.repeats // self.units_per_task)

    def task_rows(self, epoch: int, task: int) -> list[tuple[int, int]]:
        """``(shard index, row)`` pairs task ``task`` of epoch ``epoch`` reads, in order."""
        if not 0 <= task < self.num_tasks or epoch < 0:
            raise IndexError(f"no task {task} in epoch {epoch} ({self.num_tasks} per epoch)")
        units = _units(self.rows, self.block_rows)
        order = _epoch_order(len(units), self.repeats, self.seed, epoch)
        picked = units[order[task * self.units_per_task : (task + 1) * self.units_per_task]]
        return [
            (int(s), r) for s, first, n in picked for r in range(int(first), int(first) + int(n))
        ]


@functools.lru_cache(maxsize=4)
def _units(rows: tuple[int, ...], block_rows: int) -> np.ndarray:
    """``(U, 3)`` int64: shard, first row, row count of every block."""
    out = [
        (s, first, min(block_rows, n - first))
        for s, n in enumerate(rows)
        for first in range(0, n, block_rows)
    ]
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


@functools.lru_cache(maxsize=4)
def _epoch_order(num_units: int, repeats: int, seed: int, epoch: int) -> np.ndarray:
    """Unit indices of one epoch: ``repeats`` passes, each its own permutation of every unit,
    so the crops of one utterance sit a pass apart (a small corpus read many times per epoch
    still fills a batch with different utterances)."""
    rng = np.random.default_rng([int(seed), int(epoch), _SALT])
    return np.concatenate([rng.permutation(num_units) for _ in range(repeats)])


def read_task(plan: ReadPlan, epoch: int, task: int) -> Iterator[dict[str, Any]]:
    """Rows ``{"key", "speaker", "audio": float32 (T,), "sample_rate", "shard"}`` of one read
    task, in plan order; each shard file is opened once per task."""
    files = ShardFiles(list(plan.shards))
    keys: dict[int, list[str]] = {}
    try:
        for s, r in plan.task_rows(epoch, task):
            if s not in keys:
                keys[s] = files.rows(s)
            if r >= len(keys[s]):
                raise ShardError(f"{plan.shards[s]} has fewer rows than its manifest; repack it")
            key = keys[s][r]
            attrs = files[s][key].attrs
            yield {
                "key": key,
                "speaker": str(attrs["speaker"]),
                "audio": files.read(s, key),
                "sample_rate": int(attrs["sample_rate"]),
                "shard": plan.shards[s],
            }
    finally:
        files.close()

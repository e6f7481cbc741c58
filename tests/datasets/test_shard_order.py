"""datasets.shard_order: batches mix many speakers at scale, by construction, not by luck.

The large-corpus tests run the pipeline's own ordering code (``plan_shards`` at pack time,
``ReadPlan`` at read time) on metadata only: 5000 speakers x 20 utterances, no audio.
"""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import sys

sys.modules.setdefault("ray", None)  # the ordering is Ray-free

import numpy as np
import pytest

from datasets.hdf5_shards import ShardError, load_manifest, pack_shards, plan_shards
from datasets.manifests import Utterance, scan_source
from datasets.shard_order import ReadPlan, read_task
from datasets.synth import generate_corpus
from tests.conftest import REAL, needs_real

BATCH = 128
BOUND = 120  # mean distinct speakers per batch of 128 the pipeline must reach at scale


def _corpus(num_speakers: int, per_speaker: int) -> list[Utterance]:
    return [
        Utterance(f"vox_id{s:05d}_u{u:03d}", "", "vox", f"id{s:05d}", f"u{u:03d}")
        for s in range(num_speakers)
        for u in range(per_speaker)
    ]


def _plan_stream(
    utts: list[Utterance], order_seed: int | None, epoch: int = 0, repeats: int = 1, **kw
) -> list[str]:
    """Speakers in the order the trainers receive them: tasks of one epoch, concatenated."""
    shards = plan_shards(utts, 256, order_seed)
    plan = ReadPlan(
        tuple(f"shard-{i:05d}.h5" for i in range(len(shards))),
        tuple(len(s) for s in shards),
        seed=7,
        repeats=repeats,
        **kw,
    )
    return [
        shards[s][r].speaker for t in range(plan.num_tasks) for s, r in plan.task_rows(epoch, t)
    ]


def _old_stream(utts: list[Utterance], repeats: int = 1, buffer: int = 256) -> list[str]:
    """The order before this module: speaker-sorted shards of 256, one read task per shard in a
    random shard order, rows in key order (each utterance's crops back to back), through the
    trainer's local shuffle buffer. Ray's buffer holds up to 1.5 x its size before a batch is
    drawn; modelled generously as a batch drawn at random from the 1.5 x 256 newest rows."""
    rng = np.random.default_rng(0)
    shards = plan_shards(utts, 256, order_seed=None)
    rows = [
        u.speaker for i in rng.permutation(len(shards)) for u in shards[i] for _ in range(repeats)
    ]
    out, pool, pos, size = [], [], 0, int(1.5 * buffer)
    while pos < len(rows) or len(pool) >= BATCH:
        take = min(len(rows) - pos, size - len(pool))
        pool.extend(rows[pos : pos + take])
        pos += take
        if len(pool) < BATCH:
            break
        pick = set(rng.choice(len(pool), size=BATCH, replace=False).tolist())
        out.extend(pool[i] for i in sorted(pick))
        pool = [x for i, x in enumerate(pool) if i not in pick]
    return out


def _distinct_per_batch(stream: list[str]) -> np.ndarray:
    return np.array(
        [len(set(stream[i : i + BATCH])) for i in range(0, len(stream) - BATCH + 1, BATCH)]
    )


@pytest.fixture(scope="module")
def large():
    return _corpus(5000, 20)


def test_batches_of_a_large_corpus_hold_nearly_128_speakers(large):
    after = _distinct_per_batch(_plan_stream(large, order_seed=0))
    assert len(after) == len(large) // BATCH
    # A random sample of 128 of 5000 equal speakers has 126.4 distinct on average.
    assert after.mean() >= BOUND and after.min() >= 110, (after.mean(), after.min())


def test_the_old_order_fails_the_bound(large):
    before = _distinct_per_batch(_old_stream(large))
    assert before.mean() < BOUND / 2, before.mean()  # measured: 44


def test_old_sorted_packs_are_still_mixed_row_by_row(large):
    rows = _distinct_per_batch(_plan_stream(large, order_seed=None, block_rows=1))
    assert rows.mean() >= BOUND
    # Blocks of a sorted pack would be runs of one speaker: why from_manifest reads them by row.
    blocks = _distinct_per_batch(_plan_stream(large, order_seed=None, block_rows=8))
    assert blocks.mean() < rows.mean() - 50


def test_every_row_is_read_repeats_times_per_epoch_in_a_new_order_each_epoch():
    shards = [4, 9, 1]
    plan = ReadPlan(
        ("a", "b", "c"), tuple(shards), seed=3, block_rows=2, rows_per_task=4, repeats=3
    )
    epochs = [
        [row for t in range(plan.num_tasks) for row in plan.task_rows(e, t)] for e in range(3)
    ]
    want = sorted((s, r) for s, n in enumerate(shards) for r in range(n) for _ in range(3))
    assert all(sorted(e) == want for e in epochs) and plan.rows_per_epoch == len(want)
    assert epochs[0] != epochs[1] != epochs[2]
    again = ReadPlan(
        ("a", "b", "c"), tuple(shards), seed=3, block_rows=2, rows_per_task=4, repeats=3
    )
    assert [again.task_rows(1, t) for t in range(again.num_tasks)] == [
        plan.task_rows(1, t) for t in range(plan.num_tasks)
    ]
    other = ReadPlan(
        ("a", "b", "c"), tuple(shards), seed=4, block_rows=2, rows_per_task=4, repeats=3
    )
    assert other.task_rows(0, 0) != plan.task_rows(0, 0) or other.task_rows(0, 1) != plan.task_rows(
        0, 1
    )
    with pytest.raises(IndexError):
        plan.task_rows(0, plan.num_tasks)
    with pytest.raises(ShardError, match="pack"):
        ReadPlan(("a",), (0,))


def test_read_task_streams_the_planned_rows_from_the_shards(tmp_path):
    utts = generate_corpus(
        tmp_path / "tree", num_speakers=5, utts_per_speaker=3, seconds=(0.3, 0.5), seed=0
    )
    manifest = pack_shards(utts, tmp_path / "shards", utts_per_shard=4, progress=False)
    plan = ReadPlan.from_manifest(manifest, seed=1, repeats=2, block_rows=2, rows_per_task=4)
    keys = {
        (i, r): u["key"]
        for i, s in enumerate(load_manifest(manifest)["shards"])
        for r, u in enumerate(
            [u for u in load_manifest(manifest)["utterances"] if u["shard"] == s["path"]]
        )
    }
    for t in range(plan.num_tasks):
        rows = list(read_task(plan, 0, t))
        assert [r["key"] for r in rows] == [keys[sr] for sr in plan.task_rows(0, t)]
        assert all(r["audio"].dtype == np.float32 and r["sample_rate"] == 16000 for r in rows)


def test_an_old_sorted_pack_is_read_row_by_row(tmp_path, caplog):
    utts = generate_corpus(
        tmp_path / "tree", num_speakers=3, utts_per_speaker=2, seconds=(0.3, 0.4), seed=0
    )
    manifest = pack_shards(
        utts, tmp_path / "shards", utts_per_shard=4, progress=False, order_seed=None
    )
    with caplog.at_level("WARNING"):
        plan = ReadPlan.from_manifest(manifest)
    assert plan.block_rows == 1 and "speaker-sorted" in caplog.text
    assert sorted(r["key"] for t in range(plan.num_tasks) for r in read_task(plan, 0, t)) == sorted(
        u.key for u in utts
    )


@pytest.mark.realdata
@needs_real
def test_real_librispeech_batches(tmp_path):
    """The shared LibriSpeech speakers (one utterance each) with the real-data recipe's 32 crops
    per utterance: batches of 128 before and after."""
    utts = scan_source(REAL / "speech" / "librispeech-train-clean-100", "librispeech")
    before = _distinct_per_batch(_old_stream(utts, repeats=32)).mean()
    after = _distinct_per_batch(_plan_stream(utts, order_seed=0, repeats=32)).mean()
    # A random 128 of 251 speakers x 32 crops would hold 251 * (1 - (250/251)**128) = 100
    # speakers; reading the crops in passes does better. Measured: before 30, after 123.
    assert after >= 115 and before < 40, (before, after)

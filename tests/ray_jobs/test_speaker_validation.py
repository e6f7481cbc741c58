"""The speaker task's per-epoch validation (val_eer, val_min_dcf) is the final evaluation's EER:
same whole-utterance embeddings, same seeded trials, also when gathered from two ranks."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from datasets.synth import generate_corpus  # noqa: E402
from models import build_model  # noqa: E402
from models.features import FbankConfig  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402
from models.tasks.speaker import SpeakerTask, SpeakerTaskConfig  # noqa: E402
from ray_jobs.evaluate.speaker import evaluate_tree  # noqa: E402
from ray_jobs.train.experiment import load_experiment  # noqa: E402
from ray_jobs.train.loop import TrainLoop  # noqa: E402
from ray_jobs.train.prepare import speaker_val_rows  # noqa: E402
from tests.ray_jobs.conftest import run_gloo_ranks  # noqa: E402

FBANK = FbankConfig()  # the inference front end SpeakerEmbedder uses (no dither)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    utts = generate_corpus(root, num_speakers=4, utts_per_speaker=4, seconds=(0.8, 1.4), seed=2)
    rows, used = speaker_val_rows(utts, FBANK, max_utterances=12, seed=0)
    return utts, rows, used


def make_loop(val_trials: int, rank: int = 0, world_size: int = 1) -> TrainLoop:
    torch.manual_seed(0)
    task = SpeakerTask(
        build_model("campplus-tiny"), SpeakerTaskConfig(num_classes=4, val_trials=val_trials)
    )
    exp = load_experiment(base={"model": {"name": "campplus-tiny"}})
    return TrainLoop(
        task, exp, device=torch.device("cpu"), total_steps=1, rank=rank, world_size=world_size
    )


def batches(rows):
    for r in rows:
        yield {
            "feats": torch.from_numpy(r["feats"])[None],
            "speaker": torch.tensor([r["speaker"]]),
            "index": torch.tensor([r["index"]]),
        }


def test_val_rows_are_a_fixed_subset_of_whole_utterances(corpus):
    utts, rows, used = corpus
    assert len(rows) == len(used) == 12
    assert [r["index"] for r in rows] == list(range(12))
    again, used_again = speaker_val_rows(utts, FBANK, max_utterances=12, seed=0)
    assert [u.key for u in used_again] == [u.key for u in used]  # seeded: the same every run
    # whole utterances: 10 ms frames over the full length
    assert all(
        abs(r["feats"].shape[0] - u.duration * 100) <= 3 for r, u in zip(rows, used, strict=True)
    )
    names = sorted({f"{u.dataset}/{u.speaker}" for u in used})
    assert [names[r["speaker"]] for r in rows] == [f"{u.dataset}/{u.speaker}" for u in used]
    # one speaker cannot make trials: no rows rather than a metric that cannot be computed
    one = [u for u in utts if u.speaker == utts[0].speaker]
    assert speaker_val_rows(one, FBANK) == ([], [])


@pytest.mark.parametrize("val_trials", [20_000, 25])  # all 66 pairs; a seeded subsample
def test_epoch_eer_equals_evaluate_tree(corpus, val_trials):
    _, rows, used = corpus
    loop = make_loop(val_trials)
    got = loop.validate(batches(rows))
    assert loop.task.training
    ev = evaluate_tree(
        SpeakerEmbedder(loop.task.model, fbank=FBANK), used, max_trials=val_trials, seed=0
    )
    assert ev["num_trials"] == min(66, val_trials) and ev["num_failed_utterances"] == 0
    assert got["val_eer"] == pytest.approx(ev["eer"], abs=1e-6)
    assert got["val_min_dcf"] == pytest.approx(ev["min_dcf_0.01"], abs=1e-6)
    # the order rows arrive in (shards, ranks) does not matter
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    assert make_loop(val_trials).validate(batches(shuffled)) == pytest.approx(got)


def _rank_worker(rank: int, rows) -> dict[str, float]:
    loop = make_loop(20_000, rank=rank, world_size=2)
    return loop.validate(batches(rows[rank::2]))  # each rank its own shard


def test_two_ranks_gather_embeddings_and_agree(corpus):
    _, rows, _ = corpus
    single = make_loop(20_000).validate(batches(rows))
    results = run_gloo_ranks(_rank_worker, rows)
    assert results[0] == results[1]  # every rank reports the same numbers
    assert results[0] == pytest.approx(single, abs=1e-6)

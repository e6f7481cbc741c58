"""Ray-free transforms of the speaker training pipeline (what Ray Data runs as operators)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)

from datasets.augment import AugmentConfig  # noqa: E402
from datasets.hdf5_shards import pack_shards  # noqa: E402
from datasets.shard_order import ReadPlan  # noqa: E402
from datasets.speaker_transforms import CropSpec, FeatureSpec, crop_task, featurize_batch  # noqa: E402
from datasets.synth import generate_corpus  # noqa: E402
from models.features import Fbank, FbankConfig  # noqa: E402


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    utts = generate_corpus(
        root / "tree", num_speakers=4, utts_per_speaker=3, seconds=(1.0, 2.0), seed=1
    )
    manifest = pack_shards(utts, root / "shards", utts_per_shard=5, progress=False)
    return utts, manifest


def _crops(manifest, spec: CropSpec, epoch: int = 0) -> list[dict]:
    """Every crop of one epoch, read task by task as the Ray pipeline reads them."""
    plan = ReadPlan.from_manifest(manifest, repeats=spec.crops_per_utterance, rows_per_task=4)
    ids = range(epoch * plan.num_tasks, (epoch + 1) * plan.num_tasks)
    return [r for i in ids for r in crop_task({"id": i}, spec, plan)]


def test_crops_have_fixed_length_and_right_labels(packed):
    utts, shards = packed
    speakers = tuple(sorted({u.speaker for u in utts}))
    spec = CropSpec(speakers=speakers, crop_seconds=1.5, crops_per_utterance=2, seed=0)
    rows = _crops(shards, spec)
    assert len(rows) == 2 * len(utts)
    assert {r["audio"].shape for r in rows} == {(24000,)}
    assert sorted({r["label"] for r in rows}) == list(range(len(speakers)))
    # reproducible under a seed; the next epoch is another order of the same crops' sources
    again = _crops(shards, spec)
    assert all(np.array_equal(a["audio"], b["audio"]) for a, b in zip(rows, again, strict=True))
    nxt = _crops(shards, spec, epoch=1)
    assert sorted(r["label"] for r in nxt) == sorted(r["label"] for r in rows)
    assert [r["label"] for r in nxt] != [r["label"] for r in rows]
    # a stream resumed at epoch 1 (ids offset by one epoch of tasks) reads epoch 1's crops
    plan = ReadPlan.from_manifest(shards, repeats=2, rows_per_task=4)
    resumed = list(crop_task({"id": 0}, spec, plan, offset=plan.num_tasks))
    assert resumed and all(
        np.array_equal(a["audio"], b["audio"]) for a, b in zip(resumed, nxt, strict=False)
    )


def test_speed_perturbation_adds_label_sets(packed):
    utts, shards = packed
    speakers = tuple(sorted({u.speaker for u in utts}))
    spec = CropSpec(speakers=speakers, crops_per_utterance=8, speed_factors=(1.0, 0.9, 1.1), seed=0)
    labels = {r["label"] for r in _crops(shards, spec)}
    assert spec.num_classes == 12 and labels <= set(range(12)) and max(labels) >= 8
    with pytest.raises(ValueError, match="start with 1.0"):
        CropSpec(speakers=speakers, speed_factors=(0.9, 1.0))


def test_speed_perturb_off_keeps_the_label_space_but_draws_no_perturbed_copies(packed):
    utts, shards = packed
    speakers = tuple(sorted({u.speaker for u in utts}))
    kw = dict(speakers=speakers, crops_per_utterance=8, speed_factors=(1.0, 0.9, 1.1), seed=0)
    spec = CropSpec(**kw, speed_perturb=False)
    rows = _crops(shards, spec)
    assert spec.num_classes == 12  # the head keeps its speed classes
    assert {r["label"] for r in rows} <= set(range(len(speakers)))  # only unperturbed labels
    perturbing = CropSpec(**kw)  # same seed, perturbation on: perturbed labels do occur
    labels = {r["label"] for r in _crops(shards, perturbing)}
    assert max(labels) >= len(speakers)


def test_augmenter_draws_speed_only_when_perturbing():
    from datasets.augment import Augmenter

    on = Augmenter(
        AugmentConfig(speed_factors=(1.0, 0.9, 1.1), noise_prob=0, reverb_prob=0), [], []
    )
    off = Augmenter(
        AugmentConfig(
            speed_factors=(1.0, 0.9, 1.1), speed_perturb=False, noise_prob=0, reverb_prob=0
        ),
        [],
        [],
    )
    rng = np.random.default_rng(0)
    assert {on.choose_speed(rng) for _ in range(50)} == {0, 1, 2}
    assert {off.choose_speed(rng) for _ in range(50)} == {0}
    assert off.num_speed_factors == 3


def test_held_out_speakers_are_never_yielded(packed):
    utts, shards = packed
    speakers = tuple(sorted({u.speaker for u in utts}))[:2]
    spec = CropSpec(speakers=speakers, seed=0)
    rows = _crops(shards, spec)
    assert len(rows) == sum(u.speaker in speakers for u in utts)


def test_featurize_matches_fbank_without_augmentation():
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)
    out = featurize_batch({"audio": audio, "label": np.array([0, 1, 2])}, FeatureSpec())
    ref = Fbank(FbankConfig())(torch.from_numpy(audio)).numpy()
    assert out["feats"].shape == (3, 98, 80) and out["feats"].dtype == np.float32
    np.testing.assert_allclose(out["feats"], ref, atol=1e-5)
    assert out["label"].dtype == np.int64


def test_featurize_with_noise_and_specaugment(real_data):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((2, 32000))).astype(np.float32)
    spec = FeatureSpec(
        augment=AugmentConfig(noise_prob=1.0, reverb_prob=1.0, specaug=True),
        noise=str(real_data / "noise"),
        rir=str(real_data / "rir"),
        seed=0,
    )
    out = featurize_batch({"audio": audio, "label": np.array([0, 1])}, spec)
    clean = featurize_batch({"audio": audio, "label": np.array([0, 1])}, FeatureSpec())
    assert out["feats"].shape == clean["feats"].shape
    assert np.isfinite(out["feats"]).all()
    assert not np.allclose(out["feats"], clean["feats"])
    # SpecAugment zeroes whole frequency bands
    assert (np.abs(out["feats"]).max(axis=1) == 0).any()

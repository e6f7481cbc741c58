"""The Ray Data pipeline over HDF5 shards on the shared local cluster."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.augment import AugmentConfig
from datasets.hdf5_shards import ShardError, pack_shards
from datasets.speaker_transforms import CropSpec, FeatureSpec
from datasets.synth import generate_corpus

pytestmark = pytest.mark.ray


def test_stream_of_features(ray_cluster, tmp_path):
    from datasets.ray_data import benchmark_throughput, speaker_training_dataset

    utts = generate_corpus(
        tmp_path / "tree", num_speakers=3, utts_per_speaker=4, seconds=(1.0, 1.5), seed=2
    )
    manifest = pack_shards(utts, tmp_path / "shards", utts_per_shard=4, progress=False)
    speakers = tuple(sorted({u.speaker for u in utts}))
    crop = CropSpec(speakers=speakers, crop_seconds=1.0, crops_per_utterance=2)
    feats = FeatureSpec(augment=AugmentConfig(noise_prob=0.0, reverb_prob=0.0))
    ds = speaker_training_dataset(manifest, crop, feats, epochs=2, batch_size=4)
    rows = ds.take_all()
    assert len(rows) == 2 * 2 * len(utts)  # two epochs in one pass
    assert {r["feats"].shape for r in rows} == {(98, 80)}
    assert sorted({int(r["label"]) for r in rows}) == [0, 1, 2]
    assert all(np.isfinite(r["feats"]).all() for r in rows)
    stats = benchmark_throughput(manifest, crop, feats, repeats=1)
    assert stats["crops_per_s"] > 0 and stats["num_cpus"] == 2 and stats["rows"] == 2 * len(utts)
    with pytest.raises(ShardError, match="pack the data first"):
        speaker_training_dataset(tmp_path / "nothing", crop, feats)

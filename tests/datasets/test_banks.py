"""datasets.banks: packed noise/RIR banks read on demand give the same augmentation and mixes as
in-memory banks, and keep a worker's memory flat however large the bank is."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from datasets.audio import write_audio
from datasets.augment import AugmentConfig, Augmenter
from datasets.banks import MemoryBank, ShardBank, open_bank
from datasets.hdf5_shards import pack_shards
from datasets.manifests import scan_files
from datasets.mixing import DynamicMixer
from datasets.mixing_config import MixConfig
from datasets.speech_pools import MemoryPool
from ray_jobs.bench.banks import make_noise_bank, worker_rss

SR = 16000


@pytest.fixture(scope="module")
def banks(tmp_path_factory):
    root = tmp_path_factory.mktemp("banks")
    rng = np.random.default_rng(0)
    for i, seconds in enumerate([0.5, 3.0, 7.0]):
        write_audio(root / "n" / f"n{i}.wav", 0.2 * rng.standard_normal(int(seconds * SR)), SR)
    t = np.arange(4000) / SR
    for i in range(3):
        rir = rng.standard_normal(t.size) * np.exp(-t / (0.03 * (i + 1)))
        rir[0] = 2.0
        write_audio(root / "r" / f"r{i}.wav", 0.5 * rir / np.abs(rir).max(), SR)
    noise = pack_shards(scan_files(root / "n"), root / "noise", kind="noise", progress=False)
    rir = pack_shards(scan_files(root / "r"), root / "rir", kind="rir", progress=False)
    return noise, rir


def test_shard_bank_reads_what_memory_holds(banks):
    noise, _ = banks
    lazy, whole = open_bank(noise, SR), open_bank(noise, SR, in_memory=True)
    assert isinstance(lazy, ShardBank) and isinstance(whole, MemoryBank)
    assert len(lazy) == len(whole) == 3
    for i in range(3):
        assert lazy.length(i) == whole.length(i)
        np.testing.assert_array_equal(lazy.read(i, 100, 900), whole.load(i)[100:900])
        for n in (4000, 32000, 200000):  # shorter, around and longer than the entries
            a = lazy.crop(i, n, np.random.default_rng(i))
            b = whole.crop(i, n, np.random.default_rng(i))
            np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError):
        lazy.read(0, 0, lazy.length(0) + 1)
    lazy.load(2)
    clone = pickle.loads(pickle.dumps(lazy))  # open handles stay behind
    np.testing.assert_array_equal(clone.load(2), whole.load(2))


def test_augmenter_and_mixer_give_the_same_output_from_either_bank(banks):
    noise, rir = banks
    cfg = AugmentConfig(noise_prob=1.0, reverb_prob=1.0)
    wav = (0.1 * np.random.default_rng(1).standard_normal(2 * SR)).astype(np.float32)
    lazy = Augmenter(cfg, open_bank(noise, SR), open_bank(rir, SR))
    whole = Augmenter(cfg, open_bank(noise, SR, in_memory=True), open_bank(rir, SR, in_memory=True))
    for seed in range(5):
        a = lazy(wav, np.random.default_rng(seed))
        b = whole(wav, np.random.default_rng(seed))
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, wav)
    rng = np.random.default_rng(2)
    pool = MemoryPool({f"s{i}": [0.1 * rng.standard_normal(3 * SR)] for i in range(4)}, SR)
    mcfg = MixConfig(sample_rate=SR, segment_seconds=1.0, ref_seconds=1.0, max_interferers=2)
    m1 = DynamicMixer(mcfg, pool, open_bank(noise, SR), open_bank(rir, SR))
    m2 = DynamicMixer(
        mcfg, pool, open_bank(noise, SR, in_memory=True), open_bank(rir, SR, in_memory=True)
    )
    for seed in range(4):
        s1, s2 = m1.mix(seed, 0.5), m2.mix(seed, 0.5)
        np.testing.assert_array_equal(s1.mix, s2.mix)
        np.testing.assert_array_equal(s1.ref, s2.ref)
    assert m1.mix(3).info["snr_db"] is not None and any(
        m1.mix(s).info["reverberant"] for s in range(4)
    )


def test_worker_memory_stays_flat_as_the_bank_grows(tmp_path):
    """A 192 MB (float32) noise bank: a worker reading it on demand grows by a few MB; reading
    it whole, as every worker did before, grows by the bank's size (so this test can fail)."""
    make_noise_bank(tmp_path, 96, seconds=30.0)  # 96 MB stored as int16
    lazy, whole = worker_rss(tmp_path / "noise", tmp_path / "rir", crops=50)
    assert (lazy["mode"], whole["mode"]) == ("on_demand", "in_memory")
    bank = lazy["bank_mb_float32"]
    assert bank == pytest.approx(192, rel=0.02)
    assert lazy["growth_mb"] < bank / 10, lazy  # measured: 3 MB (6 MB with a 3 GB bank)
    assert whole["growth_mb"] > 0.9 * bank, whole

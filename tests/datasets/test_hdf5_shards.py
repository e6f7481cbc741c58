"""datasets.hdf5_shards: pack -> read round trip, resume, failures, manifest validation."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest

from datasets.audio import load_audio, write_audio
from datasets.hdf5_shards import (
    FORMAT,
    ShardError,
    interleave_speakers,
    iter_shard,
    load_manifest,
    pack_shards,
    read_all,
    shard_paths,
)
from datasets.manifests import scan_filename_pattern, scan_files, scan_tree
from tests.conftest import REAL, needs_real


def _corpus(root: Path, n_spk: int = 3, per: int = 4, sr: int = 16000) -> Path:
    rng = np.random.default_rng(0)
    for s in range(n_spk):
        for u in range(per):
            wav = rng.uniform(-0.5, 0.5, int(sr * rng.uniform(0.1, 0.3))).astype(np.float32)
            write_audio(root / "ds" / f"spk{s}" / f"u{u}.wav", wav, sr)
    return root


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_pack_read_roundtrip(tmp_path):
    utts = scan_tree(_corpus(tmp_path / "data"))
    manifest_path = pack_shards(utts, tmp_path / "out", utts_per_shard=5, progress=False)
    m = load_manifest(tmp_path / "out")  # folder or file both work
    assert m == load_manifest(manifest_path)
    assert m["format"] == FORMAT and m["kind"] == "speech" and m["sample_rate"] == 16000
    assert [s["path"] for s in m["shards"]] == [
        "shard-00000.h5",
        "shard-00001.h5",
        "shard-00002.h5",
    ]
    assert [s["num_utterances"] for s in m["shards"]] == [5, 5, 2]
    assert m["speakers"] == ["spk0", "spk1", "spk2"] and m["num_utterances"] == 12
    # rows in the seeded speaker-interleaved order: consecutive rows are other speakers
    order = [u.key for u in interleave_speakers(utts, 0)]
    assert [u["key"] for u in m["utterances"]] == order and sorted(order) == [u.key for u in utts]
    assert m["order"] == "interleaved" and m["failures"] == []
    paths = shard_paths(manifest_path)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    rows = read_all(manifest_path)
    assert [r["key"] for r in rows] == order
    by_key = {u.key: u for u in utts}
    for row in rows:
        u = by_key[row["key"]]
        ref, _ = load_audio(u.path)
        assert set(row) == {"key", "speaker", "dataset", "audio", "sample_rate"}
        assert row["audio"].dtype == np.float32 and row["sample_rate"] == 16000
        assert (row["speaker"], row["dataset"]) == (u.speaker, u.dataset)
        np.testing.assert_allclose(row["audio"], ref, atol=1 / 32768)
    total = sum(len(r["audio"]) for r in rows) / 16000
    assert m["total_seconds"] == pytest.approx(total, abs=0.01)


def test_resample_on_pack_and_rir_float(tmp_path):
    write_audio(
        tmp_path / "rirs" / "r1.wav", np.r_[np.zeros(10), 1.0, 0.5 * np.ones(789)] * 0.9, 8000
    )
    out = pack_shards(scan_files(tmp_path / "rirs"), tmp_path / "rir", kind="rir", progress=False)
    (row,) = list(iter_shard(shard_paths(out)[0]))
    assert row["audio"].dtype == np.float32 and row["sample_rate"] == 16000
    assert len(row["audio"]) == 1600


def test_resume_after_interruption_is_identical(tmp_path):
    utts = scan_tree(_corpus(tmp_path / "data"))
    out = tmp_path / "out"
    pack_shards(utts, out, utts_per_shard=5, progress=False)
    reference = _files(out)
    # Simulate Ctrl-C during shard 2: its half-written temp file exists, the manifest does not.
    (out / "shard-00002.h5").rename(out / "shard-00002.h5.partial")
    (out / "manifest.json").unlink()
    mtime0 = (out / "shard-00000.h5").stat().st_mtime_ns
    pack_shards(utts, out, utts_per_shard=5, progress=False)
    assert (out / "shard-00000.h5").stat().st_mtime_ns == mtime0  # finished shard kept
    assert _files(out) == reference  # byte-identical result
    pack_shards(utts, out, utts_per_shard=5, progress=False, resume=False)
    assert _files(out) == reference


def test_sorted_pack_of_an_older_version_is_rewritten_interleaved(tmp_path):
    utts = scan_tree(_corpus(tmp_path / "data"))
    out = tmp_path / "out"
    old = load_manifest(pack_shards(utts, out, utts_per_shard=5, progress=False, order_seed=None))
    assert old["order"] == "sorted" and [u["key"] for u in old["utterances"]] == [
        u.key for u in utts
    ]
    new = load_manifest(pack_shards(utts, out, utts_per_shard=5, progress=False))
    assert new["order"] == "interleaved" and new["utterances"] != old["utterances"]


def test_interleave_spreads_every_speaker_evenly():
    from datasets.manifests import Utterance

    sizes = {"a": 40, "b": 20, "c": 10, "d": 10, "e": 5}
    utts = [
        Utterance(f"{s}_{i:03d}", "", "ds", s, str(i)) for s, n in sizes.items() for i in range(n)
    ]
    order = interleave_speakers(utts, seed=3)
    assert sorted(u.key for u in order) == sorted(u.key for u in utts)
    assert [u.key for u in interleave_speakers(utts, seed=3)] == [u.key for u in order]
    assert [u.key for u in interleave_speakers(utts, seed=4)] != [u.key for u in order]
    total = len(utts)
    for s, n in sizes.items():
        pos = [i for i, u in enumerate(order) if u.speaker == s]
        gaps = np.diff(pos)  # one utterance per stratum of N / n rows
        slack = len(sizes)  # other speakers' strata shift a boundary by at most a row each
        assert gaps.max() <= 2 * total / n + slack, (s, gaps)
        assert pos[0] <= total / n + slack and pos[-1] >= total - total / n - slack


def test_changed_plan_rewrites_and_removes_stale(tmp_path):
    utts = scan_tree(_corpus(tmp_path / "data"))
    out = tmp_path / "out"
    pack_shards(utts, out, utts_per_shard=5, progress=False)
    pack_shards(utts, out, utts_per_shard=12, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.h5"]
    assert load_manifest(out)["shards"][0]["num_utterances"] == 12


def test_failures_are_recorded_not_fatal(tmp_path):
    root = _corpus(tmp_path / "data", n_spk=2, per=2)
    (root / "ds" / "spk0" / "broken.wav").write_bytes(b"RIFF garbage")
    (root / "ds" / "spk1" / "empty.wav").write_bytes(b"")
    utts = scan_tree(root)
    m = load_manifest(pack_shards(utts, tmp_path / "out", utts_per_shard=2, progress=False))
    assert m["num_utterances"] == 4
    assert sorted(f["key"] for f in m["failures"]) == ["ds_spk0_broken", "ds_spk1_empty"]
    assert all(f["error"] for f in m["failures"])
    # failures survive a resume (they are stored in the finished shards)
    (tmp_path / "out" / "manifest.json").unlink()
    m2 = load_manifest(pack_shards(utts, tmp_path / "out", utts_per_shard=2, progress=False))
    assert m2 == m


def test_workers_give_same_bytes(tmp_path):
    utts = scan_tree(_corpus(tmp_path / "data"))
    pack_shards(utts, tmp_path / "a", utts_per_shard=4, progress=False)
    pack_shards(utts, tmp_path / "b", utts_per_shard=4, progress=False, workers=2)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_bad_manifests(tmp_path):
    with pytest.raises(ShardError, match="no shard manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/2"}))
    with pytest.raises(ShardError, match="repack"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ShardError, match="not valid JSON"):
        load_manifest(tmp_path)
    with pytest.raises(ShardError, match="empty"):
        pack_shards([], tmp_path / "x")


@pytest.mark.realdata
@needs_real
def test_real_fsdd_pack(tmp_path):
    utts = [
        u
        for u in scan_filename_pattern(REAL / "speech" / "fsdd", "fsdd")
        if u.utterance.startswith("0_")
    ]
    m = load_manifest(pack_shards(utts, tmp_path / "fsdd", utts_per_shard=16, progress=False))
    assert m["num_utterances"] == len(utts) == 60 and len(m["speakers"]) == 6
    rows = read_all(tmp_path / "fsdd")
    path = {u.key: u.path for u in utts}[rows[0]["key"]]
    ref, _ = load_audio(path, 16000)
    np.testing.assert_allclose(rows[0]["audio"], ref, atol=1 / 32768)

"""Outputs and inputs as URIs without Ray: ``ray_jobs.pack --output s3://...`` against a real
S3-compatible server (moto, server mode, ``tests/s3_server.py``), the shards read back through
a local mirror, and where a job's output may go (``ray_jobs/storage.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from datasets import storage
from datasets.audio import write_audio
from datasets.hdf5_shards import load_manifest, read_all
from ray_jobs.pack.cli import main as pack


def test_pack_to_s3_and_read_the_shards_back(s3_bucket, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for s in range(2):
        for u in range(3):
            write_audio(tmp_path / "d" / f"s{s}" / f"u{u}.wav", rng.uniform(-0.3, 0.3, 1600), 16000)
    out = f"{s3_bucket}/shards/tiny"
    argv = ["--data-root", str(tmp_path / "d"), "--output", out, "--utts-per-shard", "4"]
    assert pack([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"-> {out}/manifest.json")
    assert storage.list_files(out) == ["manifest.json", "shard-00000.h5", "shard-00001.h5"]
    local = storage.mirror(out, cache=tmp_path / "cache")  # what training does with a URI
    manifest = load_manifest(local)
    assert manifest["num_utterances"] == 6 and manifest["speakers"] == ["s0", "s1"]
    rows = read_all(local / "manifest.json")
    assert len(rows) == 6 and all(len(r["audio"]) == 1600 for r in rows)
    # a second mirror downloads nothing (same sizes) and gives the same folder
    assert storage.mirror(out, cache=tmp_path / "cache") == local


def test_where_an_output_may_go(tmp_path, monkeypatch):
    from ray_jobs.storage import SHARED_MOUNTS_ENV, check_output, on_shared_mount  # imports ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_output("s3://bucket/runs/x")  # a URI: always
    check_output(tmp_path / "run")  # a local folder with a local (single-node) cluster
    # the temporary package copy a submitted job runs in: refused, and the message says what
    # to pass instead
    pkg = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    with pytest.raises(ValueError, match=r"--output s3://BUCKET/PREFIX.*VOXRAY_SHARED_MOUNTS"):
        check_output(pkg / "runs" / "x")
    with pytest.raises(ValueError, match="cannot open storage"):
        check_output("nope://bucket/x")
    monkeypatch.setenv(SHARED_MOUNTS_ENV, str(tmp_path / "shared"))
    assert on_shared_mount(tmp_path / "shared" / "runs" / "x")
    assert not on_shared_mount(tmp_path / "sharedx")

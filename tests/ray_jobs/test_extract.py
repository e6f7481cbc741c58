"""ray_jobs.extract (cli.py, job.py) on the shared local Ray cluster: CLI, outputs vs baseline, resume, refusal."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import models
from datasets.manifests import scan_tree
from models.pipelines.speaker import SpeakerEmbedder
from tests.ray_jobs.conftest import EXTRACT_FAILURES

pytestmark = pytest.mark.ray

TOL = 1e-5  # exact same-length batching: batched equals one-at-a-time up to float reordering


@pytest.fixture(scope="module")
def cli_run(extract_corpus, ray_cluster):
    """One run through the command line (pkl format, small batches and parts)."""
    from ray_jobs.extract.cli import main

    root, ckpt = extract_corpus
    out = root / "out"
    rc = main(["--data-root", str(root / "data"), "--checkpoint", str(ckpt), "--output", str(out),
               "--batch-size", "4", "--part-rows", "4", "--format", "pkl"])  # fmt: skip
    assert rc == 0
    return out


def test_outputs_equal_baseline(extract_corpus, cli_run):
    from ray_jobs.extract.job import extract_baseline

    root, ckpt = extract_corpus
    out = cli_run
    embedder = SpeakerEmbedder.from_checkpoint(ckpt)
    base = extract_baseline(scan_tree(root / "data"), embedder)
    assert set(base.failures) == EXTRACT_FAILURES

    ut = pq.read_table(out / "utterances.parquet")
    assert ut.column_names == ["key", "dataset", "speaker_id", "utterance_id", "path",
                               "duration", "embedding"]  # fmt: skip
    rows = {r["key"]: r for r in ut.to_pylist()}
    assert list(rows) == sorted(base.embeddings)
    for k, r in rows.items():
        np.testing.assert_allclose(np.array(r["embedding"]), base.embeddings[k], atol=TOL)

    for r in pq.read_table(out / "speakers.parquet").to_pylist():
        embs = [base.embeddings[k] for k, u in rows.items() if u["speaker_id"] == r["speaker_id"]]
        mean = np.mean(embs, axis=0)
        assert r["num_utterances"] == len(embs) == 3
        np.testing.assert_allclose(r["embedding"], mean / np.linalg.norm(mean), atol=TOL)

    failures = json.loads((out / "failures.json").read_text())
    assert {f["key"] for f in failures} == EXTRACT_FAILURES and all(f["error"] for f in failures)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_embedded"] == 12 and summary["num_failed"] == 2
    assert summary["model_id"] == embedder.model_id and summary["embed_dim"] == embedder.embed_dim
    assert summary["datasets"]["synth"]["speakers"] == 4 and summary["utterances_per_s"] > 0
    for name in ("utterance_list.json", "speaker_list.json"):
        assert json.loads((out / name).read_text())
    with (out / "utterance_embeddings.pkl").open("rb") as fh:
        upkl = pickle.load(fh)
    assert set(upkl) == set(rows) and all(v["embedding"].dtype == np.float32 for v in upkl.values())
    with (out / "speaker_embeddings.pkl").open("rb") as fh:
        assert set(pickle.load(fh)) == {f"synth_spk{i:03d}" for i in range(4)}


def test_resume_after_losing_parts(extract_corpus, cli_run, tmp_path):
    import shutil

    from ray_jobs.extract.job import extract

    root, ckpt = extract_corpus
    out = tmp_path / "out"
    shutil.copytree(cli_run, out)
    parts = sorted((out / "parts").glob("part-*.parquet"))
    assert len(parts) >= 3
    for p in parts[1::2]:  # as if the job had died before writing these
        p.unlink()
    for name in ("utterances.parquet", "speakers.parquet", "summary.json"):
        (out / name).unlink()
    summary = extract(scan_tree(root / "data"), ckpt, out, batch_size=4, part_rows=4)
    assert 0 < summary["processed_this_run"] < 14
    for name in ("utterances.parquet", "speakers.parquet"):
        a, b = pq.read_table(cli_run / name), pq.read_table(out / name)
        assert a.drop_columns(["embedding"]).equals(b.drop_columns(["embedding"]))
        np.testing.assert_allclose(
            np.array(a["embedding"].to_pylist()), np.array(b["embedding"].to_pylist()), atol=TOL
        )
    assert json.loads((out / "failures.json").read_text()) == json.loads(
        (cli_run / "failures.json").read_text()
    )


def test_other_model_refused(extract_corpus, cli_run, tmp_path, caplog):
    from ray_jobs.extract.cli import main

    root, _ = extract_corpus
    torch.manual_seed(1)
    other = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "o.pt")
    before = sorted(p.name for p in (cli_run / "parts").iterdir())
    rc = main(["--data-root", str(root / "data"), "--checkpoint", str(other),
               "--output", str(cli_run)])  # fmt: skip
    assert rc == 2
    assert "must not be mixed" in caplog.text
    assert sorted(p.name for p in (cli_run / "parts").iterdir()) == before


def test_cli_sources(extract_corpus, tmp_path, caplog):
    """Kaldi wav.scp + utt2spk and the tree layouts name the same utterances; bad args -> 2."""
    from ray_jobs.extract.cli import build_parser, collect, main

    root, ckpt = extract_corpus
    utts = scan_tree(root / "data")
    (tmp_path / "wav.scp").write_text(
        "".join(f"{u.speaker}-{u.utterance} {u.path}\n" for u in utts)
    )
    (tmp_path / "utt2spk").write_text(
        "".join(f"{u.speaker}-{u.utterance} {u.speaker}\n" for u in utts)
    )
    args = build_parser().parse_args(
        ["--wav-scp", str(tmp_path / "wav.scp"), "--utt2spk", str(tmp_path / "utt2spk"),
         "--dataset", "synth", "--checkpoint", str(ckpt), "--output", str(tmp_path / "o")]
    )  # fmt: skip
    assert [(u.speaker, u.path) for u in collect(args)] == [(u.speaker, u.path) for u in utts]
    args = build_parser().parse_args(
        ["--data-root", str(root / "data"), "--layout", "dataset/speaker/utt",
         "--checkpoint", str(ckpt), "--output", str(tmp_path / "o")]
    )  # fmt: skip
    assert [u.key for u in collect(args)] == [u.key for u in utts]
    assert main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "o")]) == 2
    bad_layout = ["--data-root", str(root / "data"), "--layout", "nope"]
    assert main([*bad_layout, "--checkpoint", str(ckpt), "--output", str(tmp_path / "o")]) == 2
    assert "unknown layout 'nope'" in caplog.text

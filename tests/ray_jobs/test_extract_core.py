"""ray_jobs.extract.core without Ray: featurize/embed rows, exact batching, parts, resume, outputs."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

sys.modules.setdefault("ray", None)  # the core must import and run without Ray

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datasets import storage
from datasets.audio import load_audio, write_audio
from datasets.manifests import scan_tree
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.extract.core import (
    embed_rows,
    extract_baseline,
    featurize_rows,
    frame_groups,
    local_stream,
    manifest_rows,
    plan_rows,
    run_extraction,
)
from ray_jobs.extract.output import (
    ExtractError,
    OutputState,
    PartStore,
    aggregate_speakers,
    open_output,
)
from tests.ray_jobs.conftest import EXTRACT_FAILURES

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5  # batched vs one-at-a-time embeddings: exact grouping, float reordering only


@pytest.fixture(scope="module")
def corpus(extract_corpus):
    """``(root, utterances, checkpoint)`` of the shared extraction corpus."""
    root, ckpt = extract_corpus
    return root, scan_tree(root / "data"), ckpt


@pytest.fixture(scope="module")
def embedder(corpus):
    return SpeakerEmbedder.from_checkpoint(corpus[2])


def _state(embedder):
    return OutputState(model_id=embedder.model_id, embed_dim=embedder.embed_dim)


@pytest.fixture(scope="module")
def full_run(corpus, embedder, tmp_path_factory):
    """One uninterrupted in-process extraction: the reference for the resume tests."""
    out = tmp_path_factory.mktemp("full") / "out"
    summary = run_extraction(
        corpus[1], out, _state(embedder), local_stream(embedder, batch_size=4),
        formats=("parquet", "pkl"), part_rows=4,
    )  # fmt: skip
    return out, summary


def _rows(table):
    return {r["key"]: r for r in table.to_pylist()}


def _assert_same_outputs(a: Path, b: Path):
    for name in ("utterances.parquet", "speakers.parquet"):
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        assert ta.schema == tb.schema and ta.num_rows == tb.num_rows
        assert ta.drop_columns(["embedding"]).equals(tb.drop_columns(["embedding"]))
        ea = np.array(ta["embedding"].to_pylist())
        eb = np.array(tb["embedding"].to_pylist())
        np.testing.assert_allclose(ea, eb, atol=TOL)
    for name in ("failures.json", "utterance_list.json", "speaker_list.json"):
        assert json.loads((a / name).read_text()) == json.loads((b / name).read_text())


def test_featurize_rows_captures_failures(corpus, embedder):
    _, utts, _ = corpus
    rows = manifest_rows(utts)
    rows.append({**rows[0], "key": "missing", "path": "/nonexistent/x.wav"})
    batch = {c: np.array([r[c] for r in rows], dtype=object) for c in rows[0]}
    out = featurize_rows(batch, embedder.fbank_cfg)
    errors = dict(zip(out["key"], out["error"], strict=True))
    assert (
        "truncated" in errors["synth_spk000_zz_corrupt"]
        or "decoded" in errors["synth_spk000_zz_corrupt"]
    )
    assert "empty" in errors["synth_spk001_zz_empty"]
    assert "no such audio file" in errors["missing"]
    assert sum(1 for e in out["error"] if e) == 3
    for f, n, e in zip(out["feats"], out["num_frames"], out["error"], strict=True):
        assert f.shape == (n, embedder.fbank_cfg.num_mel_bins) and (n == 0) == bool(e)
    # The good rows' features are the embedder's own front end on the decoded file.
    i = list(out["key"]).index(utts[0].key)
    wav, _ = load_audio(utts[0].path, target_sr=16000)
    ref = embedder.fbank(torch.from_numpy(wav).unsqueeze(0))[0].numpy()
    np.testing.assert_array_equal(out["feats"][i], ref)
    assert out["duration"][i] == pytest.approx(len(wav) / 16000)


def test_frame_groups_exact_and_capped():
    frames = np.array([5, 3, 5, 0, 5, 3, 7])
    groups = frame_groups(frames, max_batch_frames=10)  # cap: 2 rows of 5 frames, 3 of 3
    assert sorted(map(tuple, groups)) == [(0, 2), (1, 5), (4,), (6,)]
    for g in groups:
        assert len(set(frames[g])) == 1 and 0 not in frames[g]


def test_embed_rows_equals_one_at_a_time_embed(corpus, embedder):
    """Equal-length clips share a forward pass; each row still equals embed() within TOL."""
    _, utts, _ = corpus
    wavs = [load_audio(u.path, target_sr=16000)[0] for u in utts if "zz_" not in u.key]
    n = min(len(w) for w in wavs)
    clips = [w[:n] for w in wavs[:5]] + [w[: n // 2] for w in wavs[5:8]] + wavs[8:]
    tmp = corpus[0] / "equal_len"
    paths = [write_audio(tmp / f"c{i}.wav", c, 16000) for i, c in enumerate(clips)]
    keys = [f"k{i}" for i in range(len(paths))]
    batch = {
        "key": np.array(keys, dtype=object), "dataset": np.array(["d"] * len(keys), dtype=object),
        "speaker_id": np.array(["s"] * len(keys), dtype=object),
        "utterance_id": np.array(keys, dtype=object),
        "path": np.array([str(p) for p in paths], dtype=object),
    }  # fmt: skip
    feats = featurize_rows(batch, embedder.fbank_cfg)
    groups = frame_groups(feats["num_frames"], embedder.max_batch_frames)
    assert max(len(g) for g in groups) >= 5  # the batched path is exercised
    out = embed_rows(embedder, feats)
    assert out["embedding"].dtype == np.float32 and not any(out["error"])
    for i, p in enumerate(paths):
        wav, sr = load_audio(p, target_sr=16000)
        np.testing.assert_allclose(out["embedding"][i], embedder.embed(wav, sr), atol=TOL)


def test_plan_rows_skips_done_and_sorts_by_duration(corpus):
    _, utts, _ = corpus
    rows = plan_rows(utts, done={utts[0].key})
    assert utts[0].key not in {r["key"] for r in rows} and len(rows) == len(utts) - 1
    secs = [r["header_seconds"] for r in rows]
    assert secs == sorted(secs) and secs[0] == -1.0  # unreadable files first


def test_aggregate_speakers_renormalised_mean():
    emb = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    names, spk = aggregate_speakers(["d", "d", "e"], ["a", "a", "a"], emb)
    assert names == [("d", "a", 2), ("e", "a", 1)]
    np.testing.assert_allclose(spk[0], [2**-0.5, 2**-0.5], atol=1e-6)  # mean of [1,0],[0,1]
    np.testing.assert_allclose(spk[1], [2**-0.5, 2**-0.5], atol=1e-6)


def test_outputs_match_baseline(corpus, embedder, full_run):
    _, utts, _ = corpus
    out, summary = full_run
    base = extract_baseline(utts, embedder)
    assert set(base.failures) == EXTRACT_FAILURES

    ut = pq.read_table(out / "utterances.parquet")
    assert ut.column_names == ["key", "dataset", "speaker_id", "utterance_id", "path",
                               "duration", "embedding"]  # fmt: skip
    etype = ut.schema.field("embedding").type
    assert pa.types.is_list(etype) and etype.value_type == pa.float32()
    rows = _rows(ut)
    assert list(rows) == sorted(base.embeddings)
    for k, r in rows.items():
        np.testing.assert_allclose(np.array(r["embedding"]), base.embeddings[k], atol=TOL)
        assert r["key"] == f"{r['dataset']}_{r['speaker_id']}_{r['utterance_id']}"

    st = pq.read_table(out / "speakers.parquet")
    assert st.column_names == ["key", "dataset", "speaker_id", "num_utterances", "embedding"]
    for r in st.to_pylist():
        embs = [base.embeddings[k] for k, u in rows.items() if u["speaker_id"] == r["speaker_id"]]
        assert r["num_utterances"] == len(embs) == 3
        mean = np.mean(embs, axis=0)
        np.testing.assert_allclose(r["embedding"], mean / np.linalg.norm(mean), atol=TOL)

    failures = json.loads((out / "failures.json").read_text())
    assert [f["key"] for f in failures] == ["synth_spk000_zz_corrupt", "synth_spk001_zz_empty"]
    assert all(f["path"].endswith(".wav") and f["error"] for f in failures)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["num_utterances"] == 14 and summary["num_embedded"] == 12
    assert summary["num_failed"] == 2 and summary["num_speakers"] == 4
    assert summary["embed_dim"] == embedder.embed_dim and summary["model_id"] == embedder.model_id
    assert summary["datasets"]["synth"]["embedded"] == 12 and summary["utterances_per_s"] > 0
    ul = json.loads((out / "utterance_list.json").read_text())
    assert len(ul) == 12 and "embedding" not in ul[0] and ul[0]["duration"] > 0
    sl = json.loads((out / "speaker_list.json").read_text())
    assert [s["key"] for s in sl] == [f"synth_spk{i:03d}" for i in range(4)]

    with (out / "utterance_embeddings.pkl").open("rb") as fh:
        upkl = pickle.load(fh)
    with (out / "speaker_embeddings.pkl").open("rb") as fh:
        spkl = pickle.load(fh)
    assert set(upkl) == set(rows) and set(spkl) == {s["key"] for s in sl}
    # exactly the structure older loading code reads (plain pickle, no voxray classes)
    for k, v in upkl.items():
        assert set(v) == {"embedding", "dataset", "speaker_id", "utterance_id", "path"}
        assert k == f"{v['dataset']}_{v['speaker_id']}_{v['utterance_id']}"
        assert v["path"] == rows[k]["path"] and isinstance(v["path"], str)
        assert v["embedding"].dtype == np.float32 and v["embedding"].shape == (embedder.embed_dim,)
        np.testing.assert_array_equal(v["embedding"], np.array(rows[k]["embedding"], np.float32))
    by_spk = {s["key"]: s for s in sl}
    for k, v in spkl.items():
        assert set(v) == {"embedding", "dataset", "speaker_id", "num_utterances"}
        assert k == f"{v['dataset']}_{v['speaker_id']}"
        assert (
            v["num_utterances"]
            == by_spk[k]["num_utterances"]
            == sum(
                u["dataset"] == v["dataset"] and u["speaker_id"] == v["speaker_id"]
                for u in upkl.values()
            )
        )
        assert np.linalg.norm(v["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert summary["total_utterances"] == 12 and summary["total_speakers"] == 4
    assert summary["embedding_dimension"] == embedder.embed_dim
    assert sum(d["embedded"] for d in summary["datasets"].values()) == 12


def test_resume_after_interruption_gives_same_result(corpus, embedder, full_run, tmp_path):
    _, utts, _ = corpus
    out = tmp_path / "out"
    inner = local_stream(embedder, batch_size=4)

    def crashing(rows):
        for i, batch in enumerate(inner(rows)):
            if i == 2:
                raise KeyboardInterrupt  # Ctrl-C after two batches
            yield batch

    with pytest.raises(KeyboardInterrupt):
        run_extraction(utts, out, _state(embedder), crashing, part_rows=4)
    saved = PartStore(out, embedder.model_id).done_keys()
    assert 0 < len(saved) < 12 and not (out / "utterances.parquet").exists()

    seen: list[str] = []

    def recording(rows):
        seen.extend(r["key"] for r in rows)
        return inner(rows)

    summary = run_extraction(
        utts, out, _state(embedder), recording, formats=("parquet", "pkl"), part_rows=4
    )
    assert not saved & set(seen) and len(seen) == 14 - len(saved)  # finished keys skipped
    assert summary["processed_this_run"] == len(seen)
    _assert_same_outputs(full_run[0], out)


def test_resume_after_deleting_parts(corpus, embedder, full_run, tmp_path):
    _, utts, _ = corpus
    out = tmp_path / "out"
    run_extraction(utts, out, _state(embedder), local_stream(embedder, 4), part_rows=4)
    parts = PartStore(out, embedder.model_id).parts()
    assert len(parts) >= 3
    for p in parts[::2]:
        p.unlink()
    (out / "utterances.parquet").unlink()
    summary = run_extraction(utts, out, _state(embedder), local_stream(embedder, 4), part_rows=4)
    assert 0 < summary["processed_this_run"] < 14
    _assert_same_outputs(full_run[0], out)

    def never(rows):
        raise AssertionError(f"nothing should be left to embed, got {len(rows)} rows")

    # Only the two bad files are retried on a complete output.
    summary = run_extraction(
        [u for u in utts if "zz_" not in u.key], out, _state(embedder), never, part_rows=4
    )
    assert summary["num_embedded"] == 12 and summary["num_failed"] == 0


def test_parts_reach_a_uri_output_as_written_and_resume_elsewhere(
    corpus, embedder, full_run, s3_bucket, tmp_path
):
    """A URI output (a real S3 server on loopback): each part is uploaded when it is written, so
    a run interrupted on one node resumes on another from the bucket's parts alone."""
    _, utts, _ = corpus
    remote = f"{s3_bucket}/emb"
    inner = local_stream(embedder, batch_size=4)

    def crashing(rows):
        for i, batch in enumerate(inner(rows)):
            if i == 2:
                raise KeyboardInterrupt  # the node is lost after two batches
            yield batch

    here = tmp_path / "node-a"
    with pytest.raises(KeyboardInterrupt):
        run_extraction(utts, here, _state(embedder), crashing, part_rows=4, remote=remote)
    written = sorted(p.name for p in PartStore(here, embedder.model_id).parts())
    uploaded = sorted(Path(n).name for n in storage.list_files(f"{remote}/parts"))
    assert written and uploaded == written
    # another node: nothing local but what it pulls from the bucket (as extract() does first)
    there = tmp_path / "node-b"
    storage.pull_tree(remote, there)
    saved = PartStore(there, embedder.model_id).done_keys()
    assert saved
    summary = run_extraction(
        utts, there, _state(embedder), inner, formats=("parquet", "pkl"), part_rows=4,
        remote=remote,
    )  # fmt: skip
    assert summary["resumed_from_parts"] == len(saved)
    assert summary["processed_this_run"] == 14 - len(saved)
    _assert_same_outputs(full_run[0], there)


def test_other_model_is_refused(corpus, embedder, full_run, tmp_path):
    out = full_run[0]
    other = OutputState(model_id="campplus:000000000000", embed_dim=embedder.embed_dim)
    with pytest.raises(ExtractError, match="must not be mixed"):
        open_output(out, other)
    with pytest.raises(ExtractError, match="must not be mixed"):
        run_extraction(corpus[1], out, other, local_stream(embedder, 4))
    # Parts copied in from another model's output are refused too.
    (tmp_path / "o" / "parts").mkdir(parents=True)
    src = PartStore(out, embedder.model_id).parts()[0]
    (tmp_path / "o" / "parts" / src.name).write_bytes(src.read_bytes())
    with pytest.raises(ExtractError, match="holds embeddings of model"):
        PartStore(tmp_path / "o", other.model_id).done_keys()


def test_unknown_format_and_empty_manifest(embedder, tmp_path):
    with pytest.raises(ExtractError, match="unknown output format"):
        run_extraction([], tmp_path, _state(embedder), local_stream(embedder), formats=("csv",))
    with pytest.raises(ExtractError, match="no utterances"):
        run_extraction([], tmp_path, _state(embedder), local_stream(embedder))


def test_core_imports_without_ray():
    code = "import sys; sys.modules['ray'] = None; import ray_jobs.extract.core"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

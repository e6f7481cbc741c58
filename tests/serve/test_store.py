"""SpeakerStore: enrollment, groups, open-set identification, model binding, persistence and
consistency across connections and processes. Ray-free; a real SQLite file in tmp_path."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np
import pytest

sys.modules.setdefault("ray", None)  # the store must not need Ray

from models.pipelines.scoring import centroid  # noqa: E402
from serve.store import (  # noqa: E402
    Match,
    MetadataTooLargeError,
    ModelMismatchError,
    SpeakerStore,
    StoreError,
    UnknownGroupError,
    UnknownSpeakerError,
)

D = 16
MODEL = "campplus:abc123"


def _unit(rng: np.random.Generator, n: int = 1, d: int = D) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    s = SpeakerStore(tmp_path / "spk.db")
    yield s
    s.close()


def test_enroll_get_list_delete_and_groups(store):
    rng = np.random.default_rng(0)
    a = store.enroll("alice", _unit(rng, 3), groups=("team", "default"), model_id=MODEL)
    b = store.enroll("bob", _unit(rng, 2), model_id=MODEL, metadata={"lang": "en"})
    assert len(a.id) == 32 and a.groups == ("default", "team") and a.num_embeddings == 3
    assert (a.model_id, a.embed_dim) == (MODEL, D)
    assert store.get(b.id) == b and b.metadata == {"lang": "en"} and b.groups == ("default",)
    assert [s.name for s in store.list_speakers()] == ["alice", "bob"]
    assert [s.name for s in store.list_speakers("team")] == ["alice"]
    assert store.list_groups() == [
        {"name": "default", "num_speakers": 2},
        {"name": "team", "num_speakers": 1},
    ]
    assert store.add_to_group(b.id, "team").groups == ("default", "team")
    assert store.add_to_group(b.id, "team").groups == ("default", "team")  # idempotent
    assert store.remove_from_group(a.id, "default").groups == ("team",)
    assert [s.name for s in store.list_speakers("default")] == ["bob"]
    store.delete(a.id)
    assert [s.name for s in store.list_speakers()] == ["bob"]
    assert {g["name"]: g["num_speakers"] for g in store.list_groups()} == {"default": 1, "team": 1}
    with pytest.raises(UnknownSpeakerError):
        store.get(a.id)
    assert store.embeddings(b.id).shape == (2, D)


def test_unknown_ids_and_groups_raise_specific_errors(store):
    sp = store.enroll("alice", _unit(np.random.default_rng(1)), model_id=MODEL)
    for call in (
        lambda: store.get("nope"),
        lambda: store.delete("nope"),
        lambda: store.add_to_group("nope", "g"),
        lambda: store.remove_from_group("nope", "default"),
    ):
        with pytest.raises(UnknownSpeakerError, match="nope"):
            call()
    for call in (
        lambda: store.list_speakers("ghosts"),
        lambda: store.remove_from_group(sp.id, "ghosts"),
        lambda: store.identify(np.ones(D), group="ghosts"),
        lambda: store.delete_group("ghosts"),
    ):
        with pytest.raises(UnknownGroupError, match="ghosts"):
            call()
    assert issubclass(UnknownGroupError, StoreError) and issubclass(StoreError, ValueError)
    with pytest.raises(StoreError, match="non-empty"):
        store.enroll("x", np.zeros((0, D)), model_id=MODEL)
    with pytest.raises(StoreError, match="NaN"):
        store.enroll("x", np.full((1, D), np.nan), model_id=MODEL)


def test_centroid_is_mean_of_normalised_rows_and_reenrollment_updates_it(store):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, D)).astype(np.float32) * np.array([[1], [10], [0.1], [3]], "f4")
    expect = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
    expect /= np.linalg.norm(expect)
    np.testing.assert_allclose(centroid(x), expect, atol=1e-6)
    sp = store.enroll("alice", x[:2], model_id=MODEL, metadata={"a": 1})
    # the probe equal to the centroid scores 1
    assert store.identify(centroid(x[:2]))[0].score == pytest.approx(1.0, abs=1e-6)
    again = store.enroll(
        "ignored", x[2:], model_id=MODEL, speaker_id=sp.id, groups=("vip",), metadata={"b": 2}
    )
    assert again.id == sp.id and again.name == "alice" and again.num_embeddings == 4
    assert again.groups == ("default", "vip") and again.metadata == {"a": 1, "b": 2}
    assert len(store.list_speakers()) == 1
    top = store.identify(expect)[0]
    assert top.speaker_id == sp.id and top.score == pytest.approx(1.0, abs=1e-6)


def test_identify_top_k_ordering_and_open_set(store):
    rng = np.random.default_rng(3)
    centres = _unit(rng, 6)
    ids = [store.enroll(f"s{i}", c, model_id=MODEL).id for i, c in enumerate(centres)]
    probe = centres[2] + 0.3 * _unit(rng)[0]
    expect = np.argsort(-(centres @ (probe / np.linalg.norm(probe))), kind="stable")
    got = store.identify(probe, top_k=3, threshold=0.5)
    assert [m.speaker_id for m in got] == [ids[i] for i in expect[:3]]
    assert got[0].name == "s2" and got[0].score >= 0.5
    assert all(a.score >= b.score for a, b in zip(got, got[1:], strict=False))
    # open set: below threshold -> "unknown" first (with the best score), then the candidates
    far = store.identify(probe, top_k=2, threshold=0.999)
    assert far[0] == Match(None, "unknown", got[0].score)
    assert [m.speaker_id for m in far[1:]] == [m.speaker_id for m in got[:2]]
    # top_k larger than the gallery returns the whole gallery
    assert len(store.identify(probe, top_k=50, threshold=-1.0)) == 6
    # group restricts the search
    store.add_to_group(ids[4], "g")
    only = store.identify(probe, group="g", top_k=5, threshold=-1.0)
    assert [m.speaker_id for m in only] == [ids[4]]
    # an empty group (speaker removed) answers unknown with the minimum cosine
    store.remove_from_group(ids[4], "g")
    assert store.identify(probe, group="g") == [Match(None, "unknown", -1.0)]
    # batch equals singles
    probes = _unit(rng, 4)
    batch = store.identify_batch(probes, top_k=3)
    singles = [store.identify(p, top_k=3) for p in probes]
    assert [[m.speaker_id for m in r] for r in batch] == [
        [m.speaker_id for m in r] for r in singles
    ]
    for rb, rs in zip(batch, singles, strict=True):
        np.testing.assert_allclose([m.score for m in rb], [m.score for m in rs], atol=1e-6)


def test_model_and_dimension_mismatch_are_refused_and_nothing_is_lost(tmp_path):
    path = tmp_path / "spk.db"
    rng = np.random.default_rng(4)
    with SpeakerStore(path) as s:
        a = s.enroll("alice", _unit(rng, 2), model_id=MODEL)
        v = s.version
        with pytest.raises(ModelMismatchError, match="other|different|not comparable"):
            s.enroll("bob", _unit(rng, 2), model_id="eres2net:ffff")
        with pytest.raises(ModelMismatchError):
            s.enroll("bob", _unit(rng, 2, d=D + 1), model_id=MODEL)
        with pytest.raises(ModelMismatchError):
            s.import_gallery(["x"], _unit(rng, 1, d=8), group="g", model_id=MODEL)
        with pytest.raises(ModelMismatchError):
            s.identify(np.ones(D + 1))
        assert s.version == v  # rolled back: no write happened
        assert [sp.id for sp in s.list_speakers()] == [a.id]
        assert s.get(a.id).num_embeddings == 2 and s.model_id == MODEL and s.embed_dim == D
        assert [g["name"] for g in s.list_groups()] == ["default"]
    with pytest.raises(ModelMismatchError):
        SpeakerStore(path, model_id="eres2net:ffff")
    with pytest.raises(ModelMismatchError):
        SpeakerStore(path, embed_dim=D + 1)
    with SpeakerStore(path, model_id=MODEL, embed_dim=D) as s:
        with pytest.raises(ModelMismatchError, match="opened for model"):
            s.enroll("bob", _unit(rng, 1), model_id="eres2net:ffff")
        s.delete(a.id)
    with SpeakerStore(path) as s:  # once empty, the store may be re-bound to another model
        s.enroll("carol", _unit(rng, 1, d=8), model_id="eres2net:ffff")
        assert (s.model_id, s.embed_dim) == ("eres2net:ffff", 8)


def test_persistence_across_reopen(tmp_path):
    path = tmp_path / "spk.db"
    rng = np.random.default_rng(5)
    probes = _unit(rng, 3)
    with SpeakerStore(path) as s:
        for i in range(5):
            s.enroll(f"s{i}", _unit(rng, 2), groups=("default", f"g{i % 2}"), model_id=MODEL)
        before = (s.list_speakers(), s.list_groups(), s.identify_batch(probes, threshold=0.0))
        mode = s._conn.execute("PRAGMA journal_mode").fetchone()[0]
        fk = s._conn.execute("PRAGMA foreign_keys").fetchone()[0]
    assert (mode, fk) == ("wal", 1)
    with SpeakerStore(path, model_id=MODEL) as s:
        assert (s.list_speakers(), s.list_groups(), s.identify_batch(probes, threshold=0.0)) == (
            before
        )


def test_two_stores_on_one_file_see_each_others_writes(tmp_path):
    path = tmp_path / "spk.db"
    rng = np.random.default_rng(6)
    a, b = SpeakerStore(path), SpeakerStore(path)
    try:
        x = _unit(rng)
        assert b.identify(x[0]) == [Match(None, "unknown", -1.0)]  # builds b's (empty) index
        sp = a.enroll("alice", x, model_id=MODEL)
        got = b.identify(x[0])
        assert got[0].speaker_id == sp.id and got[0].score == pytest.approx(1.0, abs=1e-6)
        a.add_to_group(sp.id, "vip")
        assert b.identify(x[0], group="vip")[0].speaker_id == sp.id
        a.delete(sp.id)
        assert b.identify(x[0])[0].speaker_id is None
        assert b.version == a.version
    finally:
        a.close()
        b.close()


def _writer(path: str, worker: int, n: int) -> None:
    rng = np.random.default_rng(100 + worker)
    with SpeakerStore(path) as s:
        for i in range(n):
            s.enroll(f"w{worker}-{i}", _unit(rng, 2), groups=(f"w{worker}",), model_id=MODEL)


def test_concurrent_writers_in_two_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "spk.db")
    SpeakerStore(path).close()  # create the schema once; writers may also race to do it
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with SpeakerStore(path) as s:
        names = [sp.name for sp in s.list_speakers()]
        assert len(names) == len(set(names)) == 100
        assert {g["name"]: g["num_speakers"] for g in s.list_groups()} == {"w0": 50, "w1": 50}
        assert s.version >= 100
        assert len(s.identify(np.ones(D), top_k=200, threshold=-1.0)) == 100


def test_gallery_import_aggregates_repeated_labels(store):
    rng = np.random.default_rng(7)
    x = _unit(rng, 5)
    out = store.import_gallery(["b", "a", "b", "c", "a"], x, group="gal", model_id=MODEL)
    assert [(s.name, s.num_embeddings) for s in out] == [("b", 2), ("a", 2), ("c", 1)]
    assert all(s.groups == ("gal",) for s in out)
    got = store.identify(centroid(x[[0, 2]]), group="gal")[0]
    assert got.name == "b" and got.score == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(StoreError, match="labels"):
        store.import_gallery(["a"], x, group="gal", model_id=MODEL)
    assert len(store.list_speakers()) == 3  # the failed import wrote nothing


def test_parquet_import(store, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(8)
    emb = _unit(rng, 3)
    table = pa.table(
        {
            "key": ["vox/id1", "vox/id2", "cn/id1"],
            "dataset": ["vox", "vox", "cn"],
            "speaker_id": ["id1", "id2", "id1"],
            "num_utterances": [4, 2, 7],
            "embedding": pa.array([list(r) for r in emb], type=pa.list_(pa.float32())),
        }
    )
    path = tmp_path / "speakers.parquet"
    pq.write_table(table, path)
    out = store.import_speakers_parquet(path, group="corpus", model_id=MODEL)
    assert [s.name for s in out] == ["id1", "id2", "id1"]
    assert out[2].metadata["dataset"] == "cn" and out[2].metadata["key"] == "cn/id1"
    assert out[0].metadata["num_utterances"] == 4 and out[0].num_embeddings == 1
    assert store.list_groups() == [{"name": "corpus", "num_speakers": 3}]
    assert store.identify(emb[1], group="corpus")[0].speaker_id == out[1].id
    pq.write_table(pa.table({"key": ["k"]}), tmp_path / "bad.parquet")
    with pytest.raises(StoreError, match="lacks columns"):
        store.import_speakers_parquet(tmp_path / "bad.parquet", group="corpus", model_id=MODEL)
    with pytest.raises(StoreError, match="does not exist"):
        store.import_speakers_parquet(tmp_path / "none.parquet", group="corpus", model_id=MODEL)
    # the bytes the service read through its path check, named as the client sent the path
    again = store.import_speakers_parquet(
        path.read_bytes(), group="bytes", model_id=MODEL, name="jobs/speakers.parquet"
    )
    assert [s.name for s in again] == ["id1", "id2", "id1"]
    assert again[0].metadata["source"] == "jobs/speakers.parquet"
    with pytest.raises(StoreError, match=r"^jobs/bad.parquet lacks columns"):
        store.import_speakers_parquet(
            (tmp_path / "bad.parquet").read_bytes(), group="x", model_id=MODEL,
            name="jobs/bad.parquet",
        )  # fmt: skip


def test_identify_with_asnorm_scores(store):
    """A scorer (AS-norm against a cohort) replaces cosine: candidates are ranked and the
    threshold applied on its scale, within a group too."""
    from models.pipelines.scoring import asnorm_matrix

    rng = np.random.default_rng(8)
    centres = _unit(rng, 5)
    ids = [store.enroll(f"s{i}", c, model_id=MODEL).id for i, c in enumerate(centres)]
    store.add_to_group(ids[1], "g")
    store.add_to_group(ids[3], "g")
    cohort = _unit(rng, 20)
    probe = centres[3] + 0.4 * _unit(rng)[0]

    def scorer(q, g):
        return asnorm_matrix(q, g, cohort, 5)

    want = asnorm_matrix(probe[None], centres, cohort, 5)[0]  # every speaker's AS-norm score
    got = store.identify(probe, top_k=5, threshold=-100.0, scorer=scorer)
    assert [m.speaker_id for m in got] == [ids[i] for i in np.argsort(-want, kind="stable")]
    np.testing.assert_allclose([m.score for m in got], np.sort(want)[::-1], atol=1e-5)
    assert got[0].name == "s3" and got[0].score > 1.0  # z-score-like, beyond any cosine
    assert store.identify(probe, threshold=want.max() + 0.1, scorer=scorer)[0].name == "unknown"
    only = store.identify(probe, group="g", top_k=5, threshold=-100.0, scorer=scorer)
    assert [m.speaker_id for m in only] == [ids[3], ids[1]]


def test_identify_against_1000_speakers_is_fast(store):
    rng = np.random.default_rng(9)
    labels = [f"s{i}" for i in range(1000)]
    x = _unit(rng, 1000, d=192)
    store.import_gallery(labels, x, group="big", model_id="m:192")
    probe = x[123] + 0.1 * _unit(rng, 1, d=192)[0]
    assert store.identify(probe, threshold=0.5)[0].name == "s123"  # warm: builds the index
    times = []
    for _ in range(50):
        t = time.perf_counter()
        store.identify(probe, threshold=0.5)
        times.append(time.perf_counter() - t)
    # one version read + one (1000 x 192) matrix-vector product; generous bound for shared CPUs
    assert np.median(times) < 5e-3, f"median identify {np.median(times) * 1e3:.2f} ms"


def test_reenrollment_of_a_deleted_speaker_is_refused_not_recreated(store):
    rng = np.random.default_rng(7)
    sp = store.enroll("gone", _unit(rng), model_id=MODEL)
    store.delete(sp.id)
    with pytest.raises(UnknownSpeakerError, match="deleted"):
        store.enroll("gone", _unit(rng), model_id=MODEL, speaker_id=sp.id)
    assert store.num_speakers == 0 and store.list_speakers() == []


def test_active_model_and_enrollment_are_serialised(store):
    """Once a service records its active model, writes of another model's embeddings are
    refused in their transaction; a switch is refused while speakers of another model exist."""
    rng = np.random.default_rng(8)
    store.activate_model("default", MODEL)
    store.enroll("a", _unit(rng), model_id=MODEL)
    with pytest.raises(ModelMismatchError):
        store.activate_model("alt", "xvector:1")
    assert store.settings()["model_id"] == MODEL
    store.delete(store.list_speakers()[0].id)
    store.activate_model("alt", "xvector:1")  # empty store: the switch is allowed
    with pytest.raises(ModelMismatchError, match="switched while this request ran"):
        store.enroll("late", _unit(rng), model_id=MODEL)  # began under the old model
    assert store.num_speakers == 0


def test_settings_count_and_metadata_limit_persist(tmp_path):
    rng = np.random.default_rng(9)
    with SpeakerStore(tmp_path / "s.db", max_metadata_bytes=64) as s:
        s.update_settings({"threshold": 0.37, "top_k": 3})
        s.import_gallery(["a", "b", "a"], _unit(rng, 3), group="g", model_id=MODEL)
        with pytest.raises(MetadataTooLargeError, match="at most 64"):
            s.enroll("big", _unit(rng), model_id=MODEL, metadata={"x": "y" * 80})
    with SpeakerStore(tmp_path / "s.db") as s:
        assert s.settings() == {"threshold": 0.37, "top_k": 3}
        assert s.num_speakers == 2
        s.delete(s.list_speakers()[0].id)
        assert s.num_speakers == 1

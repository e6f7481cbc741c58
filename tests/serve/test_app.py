"""The speaker service over real HTTP on loopback: every endpoint and every bad input.

One Serve app per module on the shared 2-CPU cluster (deployments at ``num_cpus=0``), a tiny
random-weight CAM++ checkpoint (plus an x-vector one and the CAM++ one exported to ONNX, to
switch to) and a real SQLite file.
Random weights make same-vs-different ordering meaningless, so the checks are the contracts:
decision == score >= threshold, identical audio scores ~1, enrolled data survives restarts.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.serve.helpers import app_args, b64, expect_error, expect_ok, free_port, http_client

pytestmark = pytest.mark.ray

SR = 16000
APP = "speaker_test"


def _wav(seconds: float, seed: int, sr: int = SR, fmt: str = "WAV") -> bytes:
    from datasets.synth import sample_voice, synthesize_utterance

    rng = np.random.default_rng(seed)
    x = synthesize_utterance(sample_voice(rng), seconds, sr, rng)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import models
    from datasets.synth import generate_corpus
    from ray_jobs.export.core import export_checkpoint

    root = tmp_path_factory.mktemp("svc")
    torch_ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "a.pt")
    alt_ckpt = models.save_checkpoint(models.build_model("xvector-tiny").eval(), root / "b.pt")
    onnx_file = export_checkpoint(torch_ckpt, root / "a.onnx")
    # a calibration record beside the default model: its EER threshold is the service default
    from models.calibration import calibration_from_metrics, write_calibration
    from models.pipelines.speaker import SpeakerEmbedder

    metrics = {"eer": 0.2, "eer_threshold": 0.42, "num_trials": 10, "min_dcf_0.01": 0.9,
               "min_dcf_0.01_threshold": 0.61, "min_dcf_0.05": 0.8, "min_dcf_0.05_threshold": 0.55}  # fmt: skip
    write_calibration(
        torch_ckpt,
        SpeakerEmbedder.from_checkpoint(torch_ckpt).model_id,
        calibration_from_metrics(metrics, data="test"),
    )
    audio_root = root / "audio"
    generate_corpus(audio_root, num_speakers=2, utts_per_speaker=2, seconds=(1.0, 1.5), seed=3)
    (root / "outside.wav").write_bytes(_wav(1.0, 9))
    return {
        "root": root,
        "ckpt": torch_ckpt,
        "alt": alt_ckpt,
        "onnx": onnx_file,
        "audio_root": audio_root,
    }


def _args(files) -> dict:
    return app_args(
        files["ckpt"],
        files["root"],
        backend="torch",  # forced: test_onnx_backend_agrees_with_torch compares it with ONNX
        models={
            "alt": {"path": str(files["alt"])},
            "onnx": {"path": str(files["onnx"]), "backend": "onnx"},
        },
        allowed_roots=[str(files["audio_root"])],
        max_batch_size=8,
    )


def _start(files) -> None:
    from ray import serve

    from serve.app import build_app

    serve.run(build_app(_args(files)), name=APP, route_prefix="/")


@pytest.fixture(scope="module")
def client(ray_cluster, files):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    _start(files)
    with http_client(port) as c:
        yield c
    serve.delete(APP)
    serve.shutdown()


@pytest.fixture(scope="module")
def clips():
    return {"a": _wav(1.2, 1), "b": _wav(1.0, 2), "c": _wav(1.5, 3)}


def test_health_docs_and_config_switch(client):
    h = expect_ok(client.get("/health"))
    assert h["status"] == "ok" and h["model"] == "default" and h["num_speakers"] == 0
    assert client.get("/docs").status_code == 200
    paths = expect_ok(client.get("/openapi.json"))["paths"]
    assert {"/verify", "/identify", "/speakers/import", "/galleries"} <= set(paths)
    cfg = expect_ok(client.get("/config"))
    assert cfg["model"]["backend"] == "torch" and cfg["model"]["name"] == "default"
    assert cfg["model"]["model_id"].startswith("campplus")
    # no threshold configured: the calibration record's EER threshold, and where it came from
    assert cfg["threshold"] == 0.42 and cfg["threshold_source"].startswith("calibration: ")
    assert h["threshold"] == 0.42 and h["score_norm"] == "none"
    assert cfg["model"]["calibration"]["none"]["thresholds"]["min_dcf_0.01"] == 0.61
    assert {m["name"] for m in cfg["models"]} == {"default", "alt", "onnx"}
    # Switching models while the database is empty is allowed, and changes the embeddings.
    alt = expect_ok(client.post("/config", json={"model": "alt", "threshold": 0.3}))
    assert alt["model"]["name"] == "alt" and alt["threshold"] == 0.3
    assert alt["model"]["model_id"].startswith("xvector")
    back = expect_ok(client.post("/config", json={"model": "default", "threshold": 0.5}))
    assert back["model"]["name"] == "default" and back["threshold"] == 0.5
    assert back["threshold_source"] == "config"  # an explicit threshold overrides the record
    expect_error(client.post("/config", json={"model": "nope"}), 422, "unknown_model")
    expect_error(client.post("/config", json={"threshold": "high"}), 422, "invalid_request")


def test_verify_multipart_json_and_batch(client, clips):
    same = expect_ok(
        client.post(
            "/verify", files={"audio_a": ("a.wav", clips["a"]), "audio_b": ("a.wav", clips["a"])}
        )
    )
    assert same["score"] == pytest.approx(1.0, abs=1e-4) and same["same"] is True
    diff = expect_ok(
        client.post(
            "/verify",
            json={
                "audio_a": {"base64": b64(clips["a"])},
                "audio_b": b64(clips["b"]),
                "threshold": 0.9,
            },
        )
    )
    assert diff["threshold"] == 0.9 and diff["same"] == (diff["score"] >= 0.9)
    assert -1.0 <= diff["score"] <= 1.0
    batch = expect_ok(
        client.post(
            "/verify_batch",
            files=[
                ("reference", ("a.wav", clips["a"])),
                ("candidates", ("a.wav", clips["a"])),
                ("candidates", ("b.wav", clips["b"])),
                ("candidates", ("c.flac", _wav(1.0, 2, fmt="FLAC"))),
            ],
        )
    )
    scores = [r["score"] for r in batch["results"]]
    assert [r["index"] for r in batch["results"]] == [0, 1, 2]
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] == pytest.approx(diff["score"], abs=1e-3)  # batching does not change it
    assert all(r["same"] == (r["score"] >= batch["threshold"]) for r in batch["results"])


def test_extract_and_compare_embeddings(client, clips):
    ea = expect_ok(client.post("/extract_embedding", files={"audio": ("a.wav", clips["a"])}))
    eb = expect_ok(client.post("/extract_embedding", json={"audio": b64(clips["b"])}))
    dim = expect_ok(client.get("/config"))["model"]["embed_dim"]
    assert ea["embed_dim"] == dim == len(ea["embedding"])
    assert np.linalg.norm(ea["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert ea["duration_s"] == pytest.approx(1.2, abs=0.01)
    cmp = expect_ok(
        client.post(
            "/compare_embeddings",
            json={"embedding_a": ea["embedding"], "embedding_b": eb["embedding"]},
        )
    )
    ver = expect_ok(
        client.post("/verify", json={"audio_a": b64(clips["a"]), "audio_b": b64(clips["b"])})
    )
    assert cmp["score"] == pytest.approx(ver["score"], abs=1e-4)
    assert cmp["same"] == (cmp["score"] >= cmp["threshold"])
    msg = expect_error(
        client.post(
            "/compare_embeddings",
            json={"embedding_a": ea["embedding"][:-1], "embedding_b": ea["embedding"]},
        ),
        422,
        "wrong_dimension",
    )
    assert str(dim) in msg
    expect_error(
        client.post("/compare_embeddings", json={"embedding_a": [1.0]}), 422, "invalid_request"
    )


def test_onnx_backend_agrees_with_torch(client, clips):
    """The same checkpoint exported with ``ray_jobs.export`` and served by ONNX Runtime gives the
    torch backend's embeddings (same model id, so switching keeps the enrolled data valid)."""
    torch_emb = expect_ok(client.post("/extract_embedding", json={"audio": b64(clips["c"])}))
    torch_ver = expect_ok(
        client.post("/verify", json={"audio_a": b64(clips["a"]), "audio_b": b64(clips["b"])})
    )
    cfg = expect_ok(client.post("/config", json={"model": "onnx"}))
    try:
        assert cfg["model"]["backend"] == "onnx" and cfg["model"]["path"].endswith(".onnx")
        assert cfg["model"]["model_id"] == torch_emb["model_id"]
        onnx_emb = expect_ok(
            client.post("/extract_embedding", files={"audio": ("c.wav", clips["c"])})
        )
        onnx_ver = expect_ok(
            client.post(
                "/verify",
                files={"audio_a": ("a.wav", clips["a"]), "audio_b": ("b.wav", clips["b"])},
            )
        )
    finally:
        expect_ok(client.post("/config", json={"model": "default"}))
    a, b = np.asarray(torch_emb["embedding"]), np.asarray(onnx_emb["embedding"])
    assert a.shape == b.shape == (torch_emb["embed_dim"],)
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.9999
    assert np.abs(a - b).max() < 1e-4
    assert onnx_ver["score"] == pytest.approx(torch_ver["score"], abs=1e-4)


def test_bad_inputs_are_4xx_json(client, clips, files):
    truncated = clips["a"][: len(clips["a"]) // 2]
    cases = [
        (dict(content=b"", headers={"content-type": "application/json"}), 400, "empty_body"),
        (dict(files={"audio": ("x.wav", b"")}), 400, "empty_audio"),
        (dict(files={"audio": ("x.wav", b"GIF89a not audio" * 50)}), 400, "invalid_audio"),
        (dict(files={"audio": ("x.wav", truncated)}), 400, "truncated_audio"),
        (dict(files={"audio": ("x.wav", _wav(0.2, 1))}), 400, "audio_too_short"),
        (dict(files={"audio": ("x.flac", _wav(6.0, 1, fmt="FLAC"))}), 400, "audio_too_long"),
        (dict(files={"audio": ("x.wav", b"\0" * (1024 * 1024 + 10))}), 413, "request_too_large"),
        (dict(json={}), 422, "invalid_request"),
        (dict(json={"audio": "%%%"}), 400, "invalid_base64"),
        (
            dict(json={"audio": {"path": str(files["root"] / "outside.wav")}}),
            403,
            "path_not_allowed",
        ),
        (dict(json={"audio": {"path": "synth/../../outside.wav"}}), 403, "path_not_allowed"),
        (dict(json={"audio": {"path": "synth/nope.wav"}}), 404, "path_not_found"),
        (dict(content=b"{oops", headers={"content-type": "application/json"}), 400, "invalid_json"),
    ]
    for kwargs, status, code in cases:
        msg = expect_error(client.post("/extract_embedding", **kwargs), status, code)
        if status == 400 and "audio" in code:
            assert msg.startswith("audio: ")
    ok = client.post("/extract_embedding", json={"audio": {"path": "synth/spk000/utt000.wav"}})
    assert ok.status_code == 200, ok.text
    expect_error(
        client.post("/verify", files={"audio_a": ("a.wav", clips["a"])}), 422, "invalid_request"
    )
    expect_error(client.get("/no/such/route"), 404, "not_found")


def test_enroll_identify_groups_and_delete(client, clips):
    r = client.post(
        "/speakers",
        data={"name": "Ann", "groups": ["g1", "g2"], "metadata": '{"team": "x"}'},
        files=[("audio", ("a.wav", clips["a"]))],
    )
    assert r.status_code == 200, r.text
    ann = r.json()
    assert ann["groups"] == ["g1", "g2"] and ann["num_embeddings"] == 1
    bob = expect_ok(
        client.post("/speakers", json={"name": "Bob", "audio": [b64(clips["b"]), b64(clips["c"])]})
    )
    assert bob["groups"] == ["default"] and bob["num_embeddings"] == 2
    assert [
        s["name"] for s in expect_ok(client.get("/speakers", params={"group": "g1"}))["speakers"]
    ] == ["Ann"]
    assert {s["id"] for s in expect_ok(client.get("/speakers"))["speakers"]} >= {
        ann["id"],
        bob["id"],
    }

    found = expect_ok(client.post("/identify", files={"audio": ("a.wav", clips["a"])}))
    assert found["matches"][0]["speaker_id"] == ann["id"]
    assert found["matches"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    in_default = expect_ok(
        client.post("/identify", json={"audio": b64(clips["a"]), "group": "default"})
    )
    assert all(m["speaker_id"] != ann["id"] for m in in_default["matches"])
    unknown = expect_ok(
        client.post("/identify", json={"audio": b64(clips["b"]), "group": "g1", "threshold": 1.0})
    )
    assert (
        unknown["matches"][0]["speaker_id"] is None and unknown["matches"][0]["name"] == "unknown"
    )
    expect_error(client.post("/identify", json={"audio": b64(clips["a"]), "group": "nogroup"}), 404)

    # Groups as galleries: add, remove, list; unknown speaker or group -> 404.
    assert (
        "default"
        in expect_ok(client.post(f"/speakers/{ann['id']}/groups", json={"group": "default"}))[
            "groups"
        ]
    )
    assert expect_ok(client.delete(f"/speakers/{ann['id']}/groups/g2"))["groups"] == [
        "default",
        "g1",
    ]
    groups = expect_ok(client.get("/groups"))["groups"]
    assert groups and all(isinstance(g, dict) for g in groups)
    expect_error(client.post("/speakers/nope/groups", json={"group": "g1"}), 404, "unknown_speaker")
    expect_error(client.delete(f"/speakers/{ann['id']}/groups/nogroup"), 404)

    # Re-enroll by id adds the clips to that speaker; unknown id -> 404 and nothing changes.
    re = expect_ok(
        client.post(
            "/speakers", json={"name": "Bob", "audio": [b64(clips["b"])], "speaker_id": bob["id"]}
        )
    )
    assert re["id"] == bob["id"] and re["num_embeddings"] == 3 and re["groups"] == ["default"]
    expect_error(
        client.post(
            "/speakers", json={"name": "X", "audio": [b64(clips["b"])], "speaker_id": "nope"}
        ),
        404,
    )
    expect_error(client.post("/speakers", json={"name": "X", "audio": []}), 422)
    expect_error(
        client.post("/speakers", files={"audio": ("a.wav", b"junk")}, data={"name": "X"}), 400
    )

    # Switching models is refused while the database holds another model's embeddings.
    expect_error(client.post("/config", json={"model": "alt"}), 409, "model_mismatch")
    assert expect_ok(client.get("/config"))["model"]["name"] == "default"

    client.delete(f"/speakers/{bob['id']}").raise_for_status()
    expect_error(client.delete(f"/speakers/{bob['id']}"), 404, "unknown_speaker")
    assert bob["id"] not in {s["id"] for s in expect_ok(client.get("/speakers"))["speakers"]}


def test_bulk_import_tree_and_gallery(client, files):
    r = client.post("/speakers/import", json={"path": str(files["audio_root"]), "group": "corpus"})
    assert r.status_code == 200, r.text
    imp = r.json()
    assert imp["source"] == "tree" and imp["num_speakers"] == 2 and not imp["skipped"]
    assert sorted(s["name"] for s in imp["speakers"]) == ["spk000", "spk001"]
    assert all(s["num_embeddings"] == 2 for s in imp["speakers"])
    expect_error(
        client.post("/speakers/import", json={"path": str(files["root"])}), 403, "path_not_allowed"
    )
    expect_error(client.post("/speakers/import", json={"path": "../"}), 403, "path_not_allowed")

    # An extraction job's speakers.parquet (the columns ray_jobs/extract/output.py writes).
    dim = expect_ok(client.get("/config"))["model"]["embed_dim"]
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "key": ["synth_p1", "synth_p2"],
            "dataset": ["synth", "synth"],
            "speaker_id": ["p1", "p2"],
            "num_utterances": [3, 4],
            "embedding": pa.array(
                rng.standard_normal((2, dim)).astype(np.float32).tolist(), pa.list_(pa.float32())
            ),
        }
    )
    pq.write_table(table, files["audio_root"] / "speakers.parquet")
    pqr = expect_ok(
        client.post("/speakers/import", json={"path": "speakers.parquet", "group": "job"})
    )
    assert pqr["source"] == "parquet" and [s["name"] for s in pqr["speakers"]] == ["p1", "p2"]
    (files["audio_root"] / "bad.parquet").write_bytes(b"not parquet")
    bad = client.post("/speakers/import", json={"path": "bad.parquet"})
    expect_error(bad, 400)
    assert "bad.parquet" in bad.text and str(files["audio_root"]) not in bad.text  # as sent

    emb = rng.standard_normal((3, dim)).tolist()
    gal = expect_ok(
        client.post(
            "/galleries", json={"group": "custom", "labels": ["x", "y", "z"], "embeddings": emb}
        )
    )
    assert gal["num_speakers"] == 3 and gal["source"] == "gallery"
    hit = expect_ok(
        client.post("/compare_embeddings", json={"embedding_a": emb[1], "embedding_b": emb[1]})
    )
    assert hit["score"] == pytest.approx(1.0, abs=1e-5)
    listed = expect_ok(client.get("/speakers", params={"group": "custom"}))["speakers"]
    assert sorted(s["name"] for s in listed) == ["x", "y", "z"]
    expect_error(
        client.post("/galleries", json={"group": "c", "labels": ["x"], "embeddings": [[1.0, 2.0]]}),
        422,
        "wrong_dimension",
    )
    expect_error(
        client.post("/galleries", json={"group": "c", "labels": ["x", "y"], "embeddings": emb[:1]}),
        422,
    )


def test_enrollments_survive_restart(client, clips, files):
    from ray import serve

    before = expect_ok(client.get("/speakers"))["speakers"]
    assert any(s["name"] == "Ann" for s in before)
    serve.delete(APP)
    _start(files)
    deadline = time.time() + 60
    while client.get("/health").status_code != 200 and time.time() < deadline:
        time.sleep(0.5)
    after = expect_ok(client.get("/speakers"))["speakers"]
    assert sorted(s["id"] for s in after) == sorted(s["id"] for s in before)
    ann = next(s for s in after if s["name"] == "Ann")
    found = expect_ok(client.post("/identify", json={"audio": b64(clips["a"])}))
    assert found["matches"][0]["speaker_id"] == ann["id"]

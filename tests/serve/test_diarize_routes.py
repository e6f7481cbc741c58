"""``POST /diarize`` on a real Serve app on loopback (one app for the module, untrained model)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conversations import SR, conversation_wav
from tests.serve.helpers import PRODUCT, app_args, b64, expect_error, expect_ok, running_app

APP = "voxray-diarize-test"


@pytest.fixture(scope="module")
def client(ray_cluster, tmp_path_factory):

    import models

    root = tmp_path_factory.mktemp("diarize_serve")
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("ecapa_tdnn-tiny").eval(), root / "m.pt")
    args = app_args(
        ckpt,
        root,
        max_request_mb=4.0,
        diarization={
            "max_seconds": 20.0,
            **PRODUCT,
            "config": {"clustering.max_speakers": 4},
        },
    )
    with running_app(args, APP, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def conv() -> bytes:
    return conversation_wav(0)


@pytest.mark.ray
def test_diarize_segments_rttm_and_forced_count(client, conv):
    out = expect_ok(client.post("/diarize", json={"audio": b64(conv), "rttm": True, "uri": "c0"}))
    segs = out["segments"]
    assert segs and out["num_speakers"] == len(out["speakers"]) >= 1
    assert 12.0 < out["duration"] < 16.0
    assert all(0 <= s["start"] < s["end"] <= out["duration"] + 1e-6 for s in segs)
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segs, segs[1:], strict=False))
    assert {s["speaker"] for s in segs} == set(out["speakers"])
    assert set(out["timings"]) >= {"vad", "embedding", "clustering", "total"}
    lines = out["rttm"].splitlines()
    assert len(lines) == len(segs) and lines[0].startswith("SPEAKER c0 1 ")
    assert out["named"] == {} and out["embeddings"] is None
    # forced counts, through JSON and through a multipart upload (form fields as text)
    for n in (2, 3):
        forced = expect_ok(client.post("/diarize", json={"audio": b64(conv), "num_speakers": n}))
        assert forced["num_speakers"] == n
    multi = expect_ok(
        client.post(
            "/diarize",
            files={"audio": ("c.wav", conv, "audio/wav")},
            data={"num_speakers": "2"},
        )
    )
    assert multi["num_speakers"] == 2


@pytest.mark.ray
def test_diarize_names_clusters_from_group(client, conv):
    first = expect_ok(client.post("/diarize", json={"audio": b64(conv), "num_speakers": 2,
                                              "return_embeddings": True}))  # fmt: skip
    assert set(first["embeddings"]) == {"SPEAKER_00", "SPEAKER_01"}
    # Enroll the exact centroid of SPEAKER_00 as "alice" (deterministic with any model).
    expect_ok(client.post("/galleries", json={"group": "team", "labels": ["alice"],
                                        "embeddings": [first["embeddings"]["SPEAKER_00"]]}))  # fmt: skip
    named = expect_ok(client.post("/diarize", json={"audio": b64(conv), "num_speakers": 2,
                                              "group": "team"}))  # fmt: skip
    assert named["named"] == {"SPEAKER_00": "alice"} and named["group"] == "team"
    assert set(named["speakers"]) == {"alice", "SPEAKER_01"}  # open set: the other stays
    rename = {"SPEAKER_00": "alice"}
    assert named["segments"] == [
        {**s, "speaker": rename.get(s["speaker"], s["speaker"])} for s in first["segments"]
    ]
    expect_error(client.post("/diarize", json={"audio": b64(conv), "group": "nobody"}), 404,
         "unknown_group")  # fmt: skip


@pytest.mark.ray
def test_diarize_refuses_long_and_bad_audio(client):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(25 * SR, np.float32), SR, format="WAV")  # over max_seconds (20 s)
    msg = expect_error(client.post("/diarize", json={"audio": b64(buf.getvalue())}), 400,
               "audio_too_long")  # fmt: skip
    assert "20" in msg
    expect_error(
        client.post("/diarize", json={"audio": b64(b"not audio at all")}), 400, "invalid_audio"
    )
    r = client.post("/diarize", json={"audio": b64(b"x"), "min_speakers": 3, "max_speakers": 2})
    assert r.status_code in (400, 422)

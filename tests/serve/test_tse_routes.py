"""``POST /extract_target`` over real HTTP on loopback: round trip, raw WAV, limits, errors.

One Serve app for the module (deployments at ``num_cpus=0``) with a tiny random-weight CAM++
speaker model (required by the app) and a tiny random-weight TSE extractor. Random weights make
the audio meaningless, so the checks are the contracts: 48 kHz output with the resampled
mixture's length, JSON and ``audio/wav`` answers, and the error codes.
"""

from __future__ import annotations

import base64
import io

import pytest
import soundfile as sf

from tests.serve.helpers import PRODUCT, app_args, b64, expect_error, noise_wav, running_app

pytestmark = pytest.mark.ray

APP = "tse_test"


@pytest.fixture(scope="module")
def client(ray_cluster, tmp_path_factory):
    import torch

    import models

    root = tmp_path_factory.mktemp("tse_svc")
    torch.manual_seed(0)
    speaker = models.save_checkpoint(models.build_model("campplus-tiny"), root / "s.pt")
    tse = models.save_checkpoint(models.build_model("tse-tiny"), root / "tse.pt")
    args = app_args(
        speaker,
        root,
        max_seconds=3.0,
        diarization={"enabled": False},
        tse={"checkpoint": str(tse), **PRODUCT},
    )
    with running_app(args, APP, timeout=120) as c:
        yield c


def test_json_round_trip(client):
    r = client.post(
        "/extract_target", json={"mix": b64(noise_wav(1.3)), "ref": b64(noise_wav(1.0, seed=1))}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    y, sr = sf.read(io.BytesIO(base64.b64decode(body["audio_base64"])))
    assert sr == body["sample_rate"] == 48000
    assert y.shape == (int(1.3 * 16000) * 3,)  # 16 -> 48 kHz
    assert body["duration_s"] == pytest.approx(1.3)
    assert 0 < body["model_seconds"] <= body["total_seconds"]
    assert body["real_time_factor"] == pytest.approx(body["model_seconds"] / body["duration_s"])


def test_multipart_in_raw_wav_out(client):
    r = client.post(
        "/extract_target",
        files={
            "mix": ("m.wav", noise_wav(0.8, sr=48000)),
            "ref": ("r.wav", noise_wav(0.6, seed=2)),
        },
        headers={"Accept": "audio/wav"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(r.content))
    assert sr == 48000 and y.shape == (int(0.8 * 48000),)
    assert float(r.headers["x-duration-s"]) == pytest.approx(0.8)


def test_errors(client):
    ref = b64(noise_wav(1.0, seed=1))
    expect_error(
        client.post("/extract_target", json={"mix": b64(b"junk" * 50), "ref": ref}),
        400,
        "invalid_audio",
    )
    expect_error(
        client.post("/extract_target", json={"mix": b64(noise_wav(4.0)), "ref": ref}),
        400,
        "audio_too_long",
    )  # max_seconds = 3
    expect_error(
        client.post(
            "/extract_target", json={"mix": b64(noise_wav(1.0)), "ref": b64(noise_wav(0.2))}
        ),
        400,
        "audio_too_short",
    )  # reference under 0.5 s
    r = client.post("/extract_target", json={"mix": b64(noise_wav(1.0))})
    assert r.status_code in (400, 422), r.text

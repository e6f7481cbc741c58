"""Codec and classify routes over real HTTP on loopback: round trips, bitrate, top-k, errors.

One Serve app for the module (deployments at ``num_cpus=0``) with a tiny random-weight CAM++
speaker model (required by the app), two tiny TinyStream codecs and a tiny ACDNet classifier.
Random weights make audio quality meaningless, so the checks are the contracts: lengths,
bitrates, model-id checks, probability ordering and the error codes.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf

from tests.serve.helpers import PRODUCT, app_args, b64, expect_error, noise_wav, running_app

pytestmark = pytest.mark.ray

APP = "codec_test"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import torch

    import models

    root = tmp_path_factory.mktemp("codec_svc")
    torch.manual_seed(0)
    out = {
        "speaker": models.save_checkpoint(models.build_model("campplus-tiny"), root / "s.pt"),
        "tiny": models.save_checkpoint(models.build_model("tinystream-ultra_tiny"), root / "a.pt"),
        "other": models.save_checkpoint(models.build_model("tinystream-tiny"), root / "b.pt"),
        "clf": models.save_checkpoint(
            models.build_model("acdnet-tiny"),
            root / "c.pt",
            meta={"classes": [f"class{i}" for i in range(10)]},
        ),
        "root": root,
    }
    return out


@pytest.fixture(scope="module")
def client(ray_cluster, files):

    args = app_args(
        files["speaker"],
        files["root"],
        codecs={
            "tiny": {"checkpoint": str(files["tiny"]), **PRODUCT},
            "other": {"checkpoint": str(files["other"]), **PRODUCT},
        },
        classify={"checkpoint": str(files["clf"]), **PRODUCT},
    )
    with running_app(args, APP, timeout=60) as c:
        yield c


def test_encode_decode_round_trip(client):
    from models.pipelines.codec import EncodedAudio

    r = client.post("/codec/encode", json={"audio": b64(noise_wav(0.7)), "num_quantizers": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    # ultra_tiny: 256 codes = 8 bits per code, 1 quantizer, 16000 / hop frames per second
    enc = EncodedAudio.from_bytes(base64.b64decode(body["codes_base64"]))
    assert body["bitrate"] == pytest.approx(8 * 16000 / enc.hop_length)
    assert body["frames"] == enc.num_frames == -(-11200 // enc.hop_length)
    assert body["num_quantizers"] == 1 and body["model"] == "tiny"
    # model inferred from the stream's model id; raw WAV out
    r = client.post(
        "/codec/decode", json={"codes": body["codes_base64"]}, headers={"Accept": "audio/wav"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    y, sr = sf.read(io.BytesIO(r.content))
    assert sr == 16000 and y.shape == (11200,)


def test_raw_bytes_and_multipart(client):
    r = client.post(
        "/codec/encode",
        files={"audio": ("x.wav", noise_wav(0.5, seed=1))},
        data={"model": "other"},
        headers={"Accept": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content[:4] == b"VXRC" and float(r.headers["x-bitrate"]) > 0
    r2 = client.post(
        "/codec/decode", content=r.content, headers={"Content-Type": "application/octet-stream"}
    )
    assert r2.status_code == 200, r2.text
    assert r2.json()["model"] == "other" and r2.json()["duration_s"] == pytest.approx(0.5)


def test_codec_errors(client):
    codes = client.post("/codec/encode", json={"audio": b64(noise_wav(0.5))}).json()["codes_base64"]
    raw = base64.b64decode(codes)
    expect_error(client.post("/codec/decode", json={"codes": b64(raw[:-2])}), 400, "corrupt_codes")
    expect_error(
        client.post("/codec/decode", json={"codes": b64(b"junk" * 10)}), 400, "corrupt_codes"
    )
    r = client.post("/codec/decode", json={"codes": codes, "model": "other"})
    expect_error(r, 400, "codec_mismatch")
    r = client.post("/codec/encode", json={"audio": b64(noise_wav(0.5)), "model": "nope"})
    expect_error(r, 422, "unknown_model")
    r = client.post("/codec/encode", json={"audio": b64(noise_wav(0.5)), "num_quantizers": 9})
    expect_error(r, 422, "invalid_num_quantizers")
    r = client.post("/codec/encode", json={"audio": b64(b"RIFF not a wav")})
    assert r.status_code == 400, r.text
    r = client.post("/codec/encode", json={"audio": b64(noise_wav(6.0))})  # max_seconds 5
    expect_error(r, 400, "audio_too_long")
    r = client.post("/codec/encode", json={"audio": b64(b"0" * (1 << 20) * 2)})
    assert r.status_code == 413, r.text


def test_classify_top_k(client):
    r = client.post("/classify", json={"audio": b64(noise_wav(1.0, 20000)), "top_k": 4})
    assert r.status_code == 200, r.text
    labels = r.json()["labels"]
    probs = [x["probability"] for x in labels]
    assert len(labels) == 4 and probs == sorted(probs, reverse=True)
    assert all(x["label"].startswith("class") for x in labels)
    r = client.post("/classify", json={"audio": b64(noise_wav(1.0, 20000)), "top_k": 10})
    assert sum(x["probability"] for x in r.json()["labels"]) == pytest.approx(1.0, abs=1e-4)
    silent = io.BytesIO()
    sf.write(silent, np.zeros(20000), 20000, format="WAV")
    r = client.post("/classify", json={"audio": b64(silent.getvalue())})
    expect_error(r, 400, "invalid_audio")


def test_disabled_product_is_404(tmp_path):
    """An app without codecs/classify: the context's lookups answer 404 endpoint_disabled,
    naming the argument that enables the product."""
    from serve.app import PRODUCTS
    from serve.context import ServeContext
    from serve.errors import ServiceError
    from serve.routes.codec import codec_name

    enable_with = {p.key: p.enable_with for p in PRODUCTS}
    args = {"checkpoint": "x.pt", "db": str(tmp_path / "s.db")}
    ctx = ServeContext.create(None, args, {}, enable_with)
    for call, hint in (
        (lambda: codec_name(ctx, None), "codecs="),
        (lambda: ctx.handle("classify"), "classify="),
        (lambda: ctx.handle("codec:tiny"), "codecs="),
    ):
        with pytest.raises(ServiceError) as exc:
            call()
        assert exc.value.status == 404 and exc.value.code == "endpoint_disabled"
        assert hint in exc.value.message

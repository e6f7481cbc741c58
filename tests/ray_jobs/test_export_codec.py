"""ONNX export of codec encoders + quantizers and classifiers, through ``ray_jobs.export``."""

import sys

sys.modules.setdefault("ray", None)

import json  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from models import build_model, save_checkpoint  # noqa: E402
from models.pipelines.codec import CodecPipeline  # noqa: E402
from ray_jobs.export.cli import main  # noqa: E402
from ray_jobs.export.sizes import format_size_table, size_table  # noqa: E402

torch.set_num_threads(2)


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def codec_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        build_model("tinystream-tiny").eval(), tmp_path_factory.mktemp("ex") / "c.pt"
    )


def test_codec_fp32_codes_match_torch(codec_ckpt, tmp_path):
    out = tmp_path / "enc.onnx"
    assert main(["--checkpoint", str(codec_ckpt), "-o", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["family"] == "codec" and meta["quantization"] == "none"
    pipe = CodecPipeline.from_checkpoint(codec_ckpt)
    assert meta["model_id"] == pipe.model_id
    rng = np.random.default_rng(0)
    sess = _session(out)
    agree, total = 0, 0
    for n_hops in (7, 50):  # dynamic length (not the traced 8 hops), and batch 2
        wav = (0.1 * rng.standard_normal((2, n_hops * pipe.hop_length))).astype(np.float32)
        codes = sess.run(None, {"wav": wav})[0]
        ref = pipe.model.encode(torch.from_numpy(wav)).numpy()
        assert codes.shape == ref.shape == (2, pipe.num_quantizers, n_hops)
        agree += int((codes == ref).sum())
        total += codes.size
    # exact except for rare near-ties of two codewords (float summation order)
    assert agree / total >= 0.99, agree / total


def test_codec_int8_and_classifier(codec_ckpt, tmp_path):
    q = tmp_path / "enc8.onnx"
    assert main(["--checkpoint", str(codec_ckpt), "--int8", "-o", str(q)]) == 0
    hop = CodecPipeline.from_checkpoint(codec_ckpt).hop_length
    codes = _session(q).run(None, {"wav": np.zeros((1, hop * 4), np.float32)})[0]
    assert codes.dtype == np.int64 and codes.shape[1:] == (4, 4)
    torch.manual_seed(0)
    model = build_model("acdnet-tiny").eval()
    classes = [f"k{i}" for i in range(10)]
    ckpt = save_checkpoint(model, tmp_path / "clf.pt", meta={"classes": classes})
    out = tmp_path / "clf.onnx"
    assert main(["--checkpoint", str(ckpt), "-o", str(out)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == classes
    x = (0.1 * np.random.default_rng(1).standard_normal((3, model.cfg.input_length))).astype(
        np.float32
    )
    logits = _session(out).run(None, {"wav": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4)


def test_size_table_int8_smaller():
    rows = size_table(("tinystream-ultra_tiny", "micro-acdnet"))
    assert [r.preset for r in rows] == ["tinystream-ultra_tiny", "micro-acdnet"]
    for r in rows:
        assert 0 < r.int8_bytes < r.fp32_bytes and r.params > 0
    assert "| micro-acdnet |" in format_size_table(rows)

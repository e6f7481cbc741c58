"""ONNX export: ONNX Runtime equals PyTorch on every speaker -tiny preset and on CAM++ 192 at two
frame counts (dynamic axes), INT8 stays close and is smaller, the CLI fails cleanly."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)  # the export job is Ray-free

import models  # noqa: E402
from models.checkpoint import save_checkpoint  # noqa: E402
from models.pipelines.onnx_backend import OnnxSpeakerEmbedder  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402
from ray_jobs.export.cli import main  # noqa: E402
from ray_jobs.export.core import export_checkpoint  # noqa: E402

pytest.importorskip("onnxruntime")
torch.set_num_threads(2)

# max |ONNX - PyTorch| over L2-normalised embeddings (float32 kernels differ in summation order)
ATOL = 1e-4
FRAMES = (150, 237)  # two lengths: the frame axis is dynamic
TINY = sorted(p for p in models.list_presets() if p.endswith("-tiny"))
SPEAKER_TINY = [
    p for p in TINY if models.get_entry(models.get_preset(p).model_name).family == "speaker"
]
# Models with their own front end (``front_end_config``: GE2E) are refused, see below.
FBANK_TINY = [p for p in SPEAKER_TINY if not hasattr(models.build_model(p), "front_end_config")]


def _checkpoint(tmp_path, preset: str):
    torch.manual_seed(0)
    model = models.build_model(preset).eval()
    return save_checkpoint(model, tmp_path / "model.pt")


def _feats(frames: int, feat_dim: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + frames)
    x = torch.randn(batch, frames, feat_dim, generator=g)
    return x - x.mean(dim=1, keepdim=True)  # mean-normalised, like the fbank front end


def _compare(tmp_path, preset: str) -> tuple[SpeakerEmbedder, OnnxSpeakerEmbedder]:
    ckpt = _checkpoint(tmp_path, preset)
    out = export_checkpoint(ckpt, tmp_path / "model.onnx")
    ref = SpeakerEmbedder.from_checkpoint(ckpt)
    onx = OnnxSpeakerEmbedder(out, num_threads=2)
    assert onx.model_id == ref.model_id and onx.embed_dim == ref.embed_dim
    assert onx.sample_rate == ref.sample_rate and onx.fbank_cfg == ref.fbank_cfg
    for frames in FRAMES:
        x = _feats(frames, ref.fbank_cfg.num_mel_bins)
        a, b = ref.embed_feats(x).numpy(), onx.embed_feats(x).numpy()
        assert b.shape == (2, ref.embed_dim)
        assert np.abs(a - b).max() <= ATOL, f"{preset} at {frames} frames"
    return ref, onx


@pytest.mark.parametrize("preset", FBANK_TINY)
def test_onnx_matches_pytorch_on_tiny_presets(tmp_path, preset):
    _compare(tmp_path, preset)


def test_model_with_its_own_front_end_is_refused(tmp_path, caplog):
    """GE2E reads a power mel over partial windows, not the fbank the ONNX backend computes:
    exporting it would serve wrong embeddings, so the job refuses and writes nothing."""
    assert "ge2e-tiny" in SPEAKER_TINY and "ge2e-tiny" not in FBANK_TINY
    ckpt = _checkpoint(tmp_path, "ge2e-tiny")
    assert main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "g.onnx")]) == 2
    assert "Ge2eMelConfig" in caplog.text and "Kaldi fbank" in caplog.text
    assert not (tmp_path / "g.onnx").exists()


def test_metadata_and_waveform_surface(tmp_path):
    ref, onx = _compare(tmp_path, "campplus-tiny")
    meta = onx.metadata
    assert meta["model_name"] == "campplus" and meta["normalized"] == "false"
    assert json.loads(meta["config"])["embed_dim"] == ref.embed_dim == int(meta["embed_dim"])
    assert (int(meta["sample_rate"]), int(meta["feat_dim"])) == (16000, 80)
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 12345, 8000)]
    np.testing.assert_allclose(
        onx.embed_batch(wavs, 16000), ref.embed_batch(wavs, 16000), atol=ATOL
    )
    e = onx.embed(wavs[1], 8000)  # resampled by the shared front end
    assert e.shape == (ref.embed_dim,) and abs(np.linalg.norm(e) - 1) < 1e-5


@pytest.mark.slow  # ~2.5 min on 2 shared cores: the TorchScript exporter on the full CAM++ graph
def test_campplus_192_fp32_and_int8(tmp_path):
    ref, onx = _compare(tmp_path, "3dspeaker/campplus_192")
    ckpt = tmp_path / "model.pt"
    assert main(["--checkpoint", str(ckpt), "--int8", "--output", str(tmp_path / "q.onnx")]) == 0
    q = OnnxSpeakerEmbedder(tmp_path / "q.onnx", num_threads=2)
    assert q.model_id == ref.model_id + "+int8" and q.metadata["quantization"] == "dynamic-int8"
    x = _feats(300, 80, batch=8, seed=1)
    cos = (onx.embed_feats(x) * q.embed_feats(x)).sum(-1)  # both unit-norm: cosine per row
    assert cos.min() > 0.95, f"cosine(FP32, INT8) min {cos.min():.4f}"
    size_fp32 = (tmp_path / "model.onnx").stat().st_size
    size_int8 = (tmp_path / "q.onnx").stat().st_size
    assert size_int8 < 0.5 * size_fp32, (size_fp32, size_int8)


def test_cli_errors_exit_2(tmp_path, caplog, capsys):
    assert main(["--checkpoint", str(tmp_path / "none.pt"), "--output", "x.onnx"]) == 2
    assert "does not exist" in caplog.text
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(tmp_path / "junk.pt"), "--output", "x.onnx"]) == 2
    assert "not a readable voxray checkpoint" in caplog.text
    assert capsys.readouterr().out == ""  # errors are logs (stderr), never stdout
    with pytest.raises(SystemExit) as exc:  # argparse: missing --output
        main(["--checkpoint", "a.pt"])
    assert exc.value.code == 2
    assert not (tmp_path / "x.onnx").exists()


def test_onnx_metadata_carries_an_imported_models_front_end():
    """An imported WeSpeaker/SpeechBrain model's front end (meta['fbank']) reaches the ONNX
    metadata that OnnxSpeakerEmbedder computes its features with."""
    from dataclasses import asdict

    from models.features import FbankConfig
    from ray_jobs.export.speaker import graph

    model = models.build_model("resnet-tiny")
    default = json.loads(graph(model, {}).metadata["fbank"])
    assert default["window_type"] == "povey" and default["kind"] == "kaldi"
    sb = FbankConfig(kind="speechbrain")
    got = json.loads(graph(model, {"fbank": asdict(sb)}).metadata["fbank"])
    assert FbankConfig(**got) == sb

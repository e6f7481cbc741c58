"""Where a served model runs (``models/pipelines/placement.py``): the device of a replica, the
backend of an embedding model, the ONNX export cached beside the checkpoint, and the fallback to
torch for a model the exporter refuses. Ray-free: no cluster, no GPU needed."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.modules.setdefault("ray", None)  # the placement logic must import without Ray

import models  # noqa: E402
from datasets.synth import sample_voice, synthesize_utterance  # noqa: E402
from models.onnx_export import ExportError  # noqa: E402
from models.pipelines.onnx_backend import OnnxSpeakerEmbedder, onnx_cache_path  # noqa: E402
from models.pipelines.placement import (  # noqa: E402
    backend_of,
    embedding_backend,
    fatal_cuda_error,
    load_embedder,
    serving_device,
)
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402

pytest.importorskip("onnxruntime")
torch.set_num_threads(1)
SR = 16000


def test_device_follows_num_gpus_and_cuda():
    assert serving_device(0, cuda_available=True).type == "cpu"  # no GPU asked: stays on CPU
    assert serving_device(0.25, cuda_available=True).type == "cuda"  # a fractional share
    assert serving_device(1, cuda_available=False).type == "cpu"  # asked, none visible
    assert serving_device(0).type == "cpu"  # torch.cuda.is_available() by default
    with pytest.raises(ValueError, match="num_gpus"):
        serving_device(-1)


def test_backend_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert embedding_backend("auto", cpu) == "onnx"
    assert embedding_backend("auto", cuda) == "torch"
    assert embedding_backend("torch", cpu) == "torch"  # the switch that forces torch
    assert embedding_backend("onnx", cpu) == "onnx"
    with pytest.raises(ValueError, match="CPU only"):
        embedding_backend("onnx", cuda)
    with pytest.raises(ValueError, match="unknown backend"):
        embedding_backend("tensorrt", cpu)


def test_fatal_cuda_errors():
    assert fatal_cuda_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert fatal_cuda_error(RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling gemm"))
    assert not fatal_cuda_error(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not fatal_cuda_error(RuntimeError("shape mismatch"))
    assert not fatal_cuda_error(ValueError("CUDA error: not a RuntimeError"))


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return [synthesize_utterance(sample_voice(rng), s, SR, rng) for s in (1.0, 1.3, 2.1)]


def test_cpu_replica_serves_cached_onnx_matching_torch(tmp_path, clips):
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "m.pt")
    onnx = load_embedder(ckpt, "auto", "cpu", threads=1)
    assert isinstance(onnx, OnnxSpeakerEmbedder) and backend_of(onnx) == "onnx"
    # exported once, beside the checkpoint, named after its content hash
    (exported,) = tmp_path.glob("m.*.onnx")
    assert onnx.path == exported
    stamp = exported.stat().st_mtime_ns
    again = load_embedder(ckpt, "auto", "cpu", threads=1)
    assert again.path == exported and exported.stat().st_mtime_ns == stamp  # reused
    ref = load_embedder(ckpt, "torch", "cpu")  # the config switch that forces torch
    assert isinstance(ref, SpeakerEmbedder) and backend_of(ref) == "torch"
    assert onnx.model_id == ref.model_id  # calibration records and enrollments carry over
    a, b = ref.embed_batch(clips, SR), onnx.embed_batch(clips, SR)  # (3, D), unit rows
    assert a.shape == b.shape and np.all(np.sum(a * b, axis=1) > 0.999)
    # a changed checkpoint gets its own export
    torch.manual_seed(1)
    models.save_checkpoint(models.build_model("campplus-tiny").eval(), ckpt)
    assert load_embedder(ckpt, "auto", "cpu").path != exported


def test_model_that_refuses_export_falls_back_to_torch(tmp_path, caplog):
    ckpt = models.save_checkpoint(models.build_model("ge2e-tiny").eval(), tmp_path / "g.pt")
    with caplog.at_level(logging.WARNING, logger="models.pipelines.placement"):
        emb = load_embedder(ckpt, "auto", "cpu")
    assert backend_of(emb) == "torch"
    assert "ONNX export was refused" in caplog.text and "PyTorch" in caplog.text
    assert not list(tmp_path.glob("*.onnx"))
    with pytest.raises(ExportError):  # forcing onnx on such a model is an error, not a fallback
        load_embedder(ckpt, "onnx", "cpu")


def _read_only(folder) -> bool:
    """Make ``folder`` read-only for this process, root included (mode bits for a user, the
    immutable flag for root, who writes through mode bits); False where that is impossible."""
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return True
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_read_only_folder_exports_into_the_cache(tmp_path, monkeypatch, clips):
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "m.pt")
    ro, cache = tmp_path / "ro", tmp_path / "cache"
    ro.mkdir()
    (ro / "m.pt").write_bytes(ckpt.read_bytes())
    monkeypatch.setenv("VOXRAY_CACHE", str(cache))
    if not _read_only(ro):
        pytest.skip("cannot make a folder read-only for root here (no chattr)")
    try:
        emb = load_embedder(ro / "m.pt", "auto", "cpu")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        os.chmod(ro, 0o755)
    assert emb.path.parent == cache / "onnx" and emb.path.is_file()
    assert not list(ro.glob("*.onnx"))
    # the same content under another folder maps to the same name (keyed by the content hash)
    assert onnx_cache_path(ckpt, emb.path.name.split(".")[1]).name == emb.path.name
    assert emb.embed_batch(clips[:1], SR).shape == (1, emb.embed_dim)

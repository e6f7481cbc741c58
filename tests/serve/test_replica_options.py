"""The model deployments' placement options, without a cluster: ``num_gpus`` from ``AppArgs``
reaches each deployment's ``ray_actor_options`` and its constructor (which picks the device in
the replica, ``models.pipelines.placement``), the health-check settings, and
``ReplicaHealth.check_health``."""

from __future__ import annotations

import pytest

import models
from tests.serve.helpers import PRODUCT, app_args


@pytest.fixture(autouse=True)
def _ray_importable():
    """Ray is blocked while test modules are collected (tests/conftest.py); the tests import
    ``serve.app`` (which needs it) in their bodies, after the block is lifted."""
    import ray  # noqa: F401


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts")
    return {
        "root": root,
        "speaker": models.save_checkpoint(models.build_model("campplus-tiny"), root / "s.pt"),
        "codec": models.save_checkpoint(models.build_model("tinystream-tiny"), root / "c.pt"),
    }


def _deployment(app):
    return app._bound_deployment


def test_num_gpus_reaches_every_model_deployment(ckpts):
    from serve import schemas as S
    from serve.deployments import HEALTH
    from serve.deployments.codec import PRODUCT as CODEC
    from serve.deployments.speaker import bind_embedding

    gpu = {**PRODUCT, "num_gpus": 0.5, "checkpoint": str(ckpts["codec"])}
    cfg = S.AppArgs.model_validate(
        app_args(ckpts["speaker"], ckpts["root"], model_num_gpus=0.25, codecs={"a": gpu})
    )
    emb = _deployment(bind_embedding(cfg))
    assert emb.ray_actor_options["num_gpus"] == 0.25
    assert emb.init_kwargs["num_gpus"] == 0.25  # the replica knows it asked for a GPU
    assert emb.ray_actor_options["num_cpus"] == 0
    for key, value in HEALTH.items():
        assert getattr(emb._deployment_config, key) == value
    codec = _deployment(CODEC.applications(cfg, None)["codec:a"])
    assert codec.ray_actor_options["num_gpus"] == 0.5 and codec.init_kwargs["num_gpus"] == 0.5
    # the CPU path is unchanged: no GPU asked for, none reserved
    cpu = S.AppArgs.model_validate(app_args(ckpts["speaker"], ckpts["root"]))
    emb = _deployment(bind_embedding(cpu))
    assert "num_gpus" not in emb.ray_actor_options and emb.init_kwargs["num_gpus"] == 0
    with pytest.raises(ValueError, match="num_gpus"):
        S.AppArgs.model_validate(app_args(ckpts["speaker"], ckpts["root"], model_num_gpus=-1))


def test_replica_on_cpu_and_health(ckpts):
    """A ``num_gpus=0`` replica runs on CPU (on ONNX Runtime for the embedder); a fatal CUDA
    error makes ``check_health`` fail, any other error does not."""
    from serve.deployments.codec import CodecModel
    from serve.deployments.speaker import EmbeddingModel

    emb = EmbeddingModel.func_or_class({"m": {"path": str(ckpts["speaker"])}}, num_gpus=0)
    assert emb.device.type == "cpu" and emb.info()["m"]["backend"] == "onnx"
    codec = CodecModel.func_or_class(str(ckpts["codec"]), num_gpus=0)
    assert codec.device.type == "cpu"
    assert next(codec.pipeline.model.parameters()).device.type == "cpu"
    codec.check_health()  # healthy
    with pytest.raises(RuntimeError), codec.watch():
        raise RuntimeError("shape mismatch")  # a caller's problem: still healthy
    codec.check_health()
    with pytest.raises(RuntimeError), codec.watch():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="fatal CUDA error"):
        codec.check_health()


@pytest.mark.gpu
def test_gpu_replica_runs_torch_on_cuda(ckpts):
    from serve.deployments.speaker import EmbeddingModel

    emb = EmbeddingModel.func_or_class({"m": {"path": str(ckpts["speaker"])}}, num_gpus=1)
    assert emb.device.type == "cuda" and emb.info()["m"]["backend"] == "torch"
    emb.check_health()

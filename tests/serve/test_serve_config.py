"""``serve/serve_config.yaml`` is a config Ray Serve accepts and its args are valid ``AppArgs``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml"


def test_shipped_config_passes_serves_deploy_schema_and_app_args():
    pytest.importorskip("ray")
    from ray.serve.schema import ServeDeploySchema

    from serve.schemas import AppArgs

    cfg = yaml.safe_load(CONFIG.read_text())
    ServeDeploySchema.model_validate(cfg)  # raises on e.g. a relative working_dir
    (app,) = cfg["applications"]
    assert app["import_path"] == "serve.app:build_app"
    # no working_dir (serve deploy refuses a local one): nodes import serve.app from the
    # cluster's checkout on PYTHONPATH (cluster.yaml)
    assert "working_dir" not in app.get("runtime_env", {})
    args = AppArgs.model_validate(app["args"])
    # state outside any package Ray unpacks: absolute paths (or URIs) only, so a redeploy keeps
    # the enrollments and finds the checkpoint
    paths = [args.db, args.api_keys_file, *(m.path for m in args.models.values())]
    assert paths and all(p.startswith("/") or "://" in p for p in paths), paths


def test_build_app_takes_a_model_name_and_fetches_it_in_the_driver(tmp_path, monkeypatch):
    """``checkpoint: hf:...`` in the Serve config: build_app resolves it before any replica
    starts (binding needs no cluster), so a bad name fails at deploy time."""
    import io

    import torch

    pytest.importorskip("ray")
    from serve.app import build_app
    from tests.conftest import reference_state_dicts, synth_state_dict
    from tests.hub_server import HubServer

    state = synth_state_dict(reference_state_dicts()["resnet34_256"], seed=1)
    buf = io.BytesIO()
    torch.save({k: v for k, v in state.items() if not k.startswith(("seg_bn_1", "seg_2"))}, buf)
    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VOXRAY_OFFLINE", raising=False)
    repo = "Wespeaker/wespeaker-voxceleb-resnet34-LM"
    with HubServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.state.files[("hf", repo, "main", "avg_model.pt")] = buf.getvalue()
        build_app({"checkpoint": f"hf:{repo}", "db": str(tmp_path / "s.db"), "auth": "disabled"})
        assert hub.state.total > 0
        assert list((tmp_path / "cache" / "checkpoints").glob("*.pt"))
    with pytest.raises(FileNotFoundError, match="model name"):
        build_app({"checkpoint": str(tmp_path / "missing.pt"), "db": str(tmp_path / "s.db")})


def test_no_keys_refuses_to_start_and_the_shipped_bind_is_loopback(tmp_path, monkeypatch):
    """A service holding voiceprints never starts open by accident: no keys -> refused; keyless
    only by asking (``auth: disabled``); the shipped config listens on loopback."""
    pytest.importorskip("ray")
    from serve.app import api_keys
    from serve.auth import ENV_VAR, hash_key
    from serve.schemas import AppArgs

    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="no API keys"):
        api_keys(AppArgs(checkpoint="x.pt"))
    assert api_keys(AppArgs(checkpoint="x.pt", auth="disabled")) is None
    monkeypatch.setenv(ENV_VAR, f'{{"ops": {{"hash": "{hash_key("k")}", "scopes": ["read"]}}}}')
    (key,) = api_keys(AppArgs(checkpoint="x.pt"))
    assert key.name == "ops"
    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["http_options"]["host"] == "127.0.0.1"
    assert cfg["applications"][0]["args"]["cors_origins"] == []


def test_serve_build_writes_a_deploy_config_of_the_app(tmp_path):
    """Ray's own ``serve build`` (it takes an application object) on ``serve.built:app``, built
    from a copy of the shipped config: the output passes Ray's schema and lists our deployments
    with the options the config set (user_config, queue bounds)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray")
    from ray.serve.schema import ServeDeploySchema

    import models
    from tests.serve.helpers import write_keys

    cfg = yaml.safe_load(CONFIG.read_text())
    (app,) = cfg["applications"]
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny"), tmp_path / "model.pt")
    app["args"].update(
        checkpoint=str(ckpt), db=str(tmp_path / "speakers.db"), backend="torch",
        api_keys_file=str(write_keys(tmp_path)), threshold=0.61, top_k=3,
    )  # fmt: skip
    args_file = tmp_path / "serve_config.yaml"
    args_file.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "built.yaml"
    root = Path(__file__).resolve().parents[2]
    serve_cli = Path(sys.executable).parent / "serve"
    r = subprocess.run(
        [str(serve_cli), "build", "serve.built:app", "-o", str(out)],
        cwd=root, env={**os.environ, "VOXRAY_SERVE_ARGS": str(args_file),
                       "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    built = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(built)
    (built_app,) = built["applications"]
    assert built_app["import_path"] == "serve.built:app"
    deps = {d["name"]: d for d in built_app["deployments"]}
    assert {"VoxrayService", "EmbeddingModel"} <= set(deps)
    assert deps["VoxrayService"]["user_config"] == {"threshold": 0.61, "top_k": 3}
    assert deps["VoxrayService"]["max_queued_requests"] == app["args"]["max_queued_requests"]

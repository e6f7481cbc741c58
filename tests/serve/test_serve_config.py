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
    assert app["runtime_env"]["working_dir"].startswith("local:///")
    AppArgs.model_validate(app["args"])

"""``serve build serve.built:app`` and ``serve run serve.built:app``: the voxray application as a
module-level object, for Ray's CLIs that take an ``Application`` rather than a builder.

Ray's ``serve build`` imports an application object and writes the deploy config of its
deployments; ``serve deploy serve/serve_config.yaml`` instead calls the builder
``serve.app:build_app`` with the config's ``args``. This module bridges the two: at import it
builds the app from the arguments in ``$VOXRAY_SERVE_ARGS``, a YAML file that is either an
``AppArgs`` mapping or a Serve config (the ``args`` of its first application)::

    VOXRAY_SERVE_ARGS=serve/serve_config.yaml serve build serve.built:app -o built.yaml

The generated config imports ``serve.built:app`` too, so deploying it needs the same variable in
the application's ``runtime_env.env_vars`` (and the same file on every node).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from serve.app import build_app

ENV_VAR = "VOXRAY_SERVE_ARGS"


def load_args(path: str | os.PathLike) -> dict[str, Any]:
    """``AppArgs`` as a dict from ``path``: an args mapping, or a Serve config's first app."""
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{ENV_VAR}: {path} is not a YAML mapping")
    if "applications" in doc:
        apps = doc["applications"] or []
        if not apps or not isinstance(apps[0].get("args"), dict):
            raise ValueError(f"{ENV_VAR}: {path} has no application with args")
        return apps[0]["args"]
    return doc


def _from_env() -> Any:
    path = os.environ.get(ENV_VAR)
    if not path:
        raise RuntimeError(
            f"serve.built:app needs ${ENV_VAR}, a YAML file of the app's arguments (or a Serve "
            f"config such as serve/serve_config.yaml): {ENV_VAR}=... serve build serve.built:app"
        )
    return build_app(load_args(path))


app = _from_env()

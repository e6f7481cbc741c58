"""cluster.yaml is accepted by Ray's own cluster-launcher checks, without a cloud account.

``ray up`` loads the YAML, then ``_bootstrap_config`` runs ``prepare_config`` (merge the AWS
defaults), ``validate_config`` (``ray-schema.json`` plus cross-field checks) and finally the
provider's ``bootstrap_config``, the first step that talks to AWS. These tests run everything up to
that step: the raw file against the packaged JSON schema, Ray's validator on the prepared config,
and ``_bootstrap_config`` itself with the AWS provider replaced by a stub.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw_config() -> dict:
    with CLUSTER_YAML.open() as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    # ray is imported when the test runs, not at collection: other modules block it while they
    # are collected (see tests/conftest.py), and it is a hard dependency, never a reason to skip
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    assert path.is_file(), f"ray-schema.json not found at {path}"
    return json.loads(path.read_text())


def test_raw_file_matches_ray_schema(raw_config: dict, ray_schema: dict) -> None:
    jsonschema.validate(raw_config, ray_schema)


def test_schema_rejects_a_broken_copy(raw_config: dict, ray_schema: dict) -> None:
    # Guards against a schema that accepts anything (the test above would then prove nothing).
    broken = copy.deepcopy(raw_config)
    broken["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema)


def test_ray_validator_accepts_prepared_config(raw_config: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw_config))
    validate_config(prepared)  # raises on any problem; needs no credentials or network
    # Our setup commands, not the AWS defaults' conda/pip ones, are what the nodes will run.
    assert prepared["setup_commands"] == raw_config["setup_commands"]
    assert prepared.get("docker", {}) == {}, "nodes run the uv venv directly, not a container"


def test_ray_up_bootstrap_with_stub_provider(raw_config: dict, monkeypatch) -> None:
    """Run ``ray up``'s own config bootstrap (``--no-config-cache``) up to the first AWS call."""
    from ray.autoscaler._private import commands, providers

    seen: dict = {}

    class StubAWSProvider:
        @staticmethod
        def fillout_available_node_types_resources(config: dict) -> dict:
            return config

        @staticmethod
        def bootstrap_config(config: dict) -> dict:
            seen["config"] = config
            return config

    monkeypatch.setitem(providers._NODE_PROVIDERS, "aws", lambda provider_config: StubAWSProvider)
    resolved = commands._bootstrap_config(copy.deepcopy(raw_config), no_config_cache=True)
    assert seen["config"] is resolved
    assert resolved["head_node_type"] in resolved["available_node_types"]


def test_node_types(raw_config: dict) -> None:
    types = raw_config["available_node_types"]
    head = raw_config["head_node_type"]
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [n for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    cpu = [
        n
        for n, t in workers.items()
        if t.get("resources", {}).get("GPU", 0) == 0 and t.get("resources", {}).get("CPU", 0) > 0
    ]
    assert gpu, "cluster.yaml needs a GPU worker type (resources: {GPU: 1})"
    assert cpu, "cluster.yaml needs a CPU-only worker type"
    for name in gpu:
        itype = types[name]["node_config"]["InstanceType"]
        assert itype.split(".")[0] in {"g4dn", "g5", "g6", "g6e", "p3", "p4d", "p5"}, itype
    total_min = sum(t.get("min_workers", 0) for t in workers.values())
    assert total_min <= raw_config["max_workers"]


def test_setup_installs_the_locked_environment(raw_config: dict) -> None:
    setup = " && ".join(raw_config["setup_commands"])
    assert "pip install" in setup and "uv" in setup
    assert "uv sync --frozen" in setup
    assert raw_config["file_mounts"].get("~/voxray") == "."
    assert ".venv" in raw_config["rsync_exclude"], "the local .venv must not be shipped"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw_config[key] if "ray start" in c]
        assert starts, key
        assert all(".venv/bin/ray start" in c for c in starts), f"{key} must use the venv's ray"


def test_token_auth_and_checkout_on_every_node(raw_config: dict) -> None:
    """Every node gets the laptop's Ray auth token and starts with token auth required; workers
    import the checkout (the Serve config deploys without a working_dir)."""
    assert raw_config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in raw_config[key] if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start and "PYTHONPATH=$HOME/voxray" in start, key

"""Shared fixtures: thread limits, the real-data folder, one local Ray cluster per session."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch

from datasets.ray_env import keep_workers_on_this_environment

REPO_ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)
keep_workers_on_this_environment()  # before any test imports ray


NO_REAL_DATA = "real data not found: set VOXRAY_REAL_DATA or place shared/ beside the repo"


def real_data_root() -> Path | None:
    root = Path(os.environ.get("VOXRAY_REAL_DATA", REPO_ROOT.parent / "shared" / "data"))
    return root if root.is_dir() else None


# For test modules that name real files at collection time (``REAL / "noise"``): the path, and
# the skip of the tests that need it (with ``@pytest.mark.realdata``).
REAL = real_data_root() or Path("/nonexistent/shared/data")
needs_real = pytest.mark.skipif(real_data_root() is None, reason=NO_REAL_DATA)


def shared_root() -> Path | None:
    root = Path(os.environ.get("VOXRAY_SHARED", REPO_ROOT.parent / "shared"))
    return root if root.is_dir() else None


@functools.cache
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# The entries of shared/reference/3dspeaker_state_dicts.json (test_compare_reference checks it)
REFERENCE_ENTRIES = (
    "campplus_192",
    "campplus_512",
    "eres2net_192",
    "eres2net_base_512",
    "eres2netv2_192",
    "ecapa_tdnn_c1024_192",
    "resnet34_256",
)


def reference_state_dicts() -> dict:
    """``shared/reference/3dspeaker_state_dicts.json``: per 3D-Speaker entry its constructor
    arguments, every state-dict key with its shape, and the parameter count. Skips without it."""
    path = (shared_root() or REPO_ROOT.parent / "shared") / "reference/3dspeaker_state_dicts.json"
    if not path.is_file():
        pytest.skip(f"3D-Speaker state-dict listing not found at {path} (set VOXRAY_SHARED)")
    return _read_json(path)


def synth_state_dict(spec: dict, seed: int) -> dict[str, torch.Tensor]:
    """Random tensors in the layout of a ``reference_state_dicts()`` entry (every key with its
    shape): a published checkpoint as its publisher would ship it, with small random weights."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in spec["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = 0.05 * torch.randn(shape, generator=g)
    return out


def assert_reference_layout(model: torch.nn.Module, spec: dict) -> None:
    """``model``'s state dict has exactly the keys and shapes of the 3D-Speaker entry ``spec``
    (one of ``reference_state_dicts()``), as many parameters, and a reference-shaped state dict
    loads into it strictly."""
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ref = spec["state_dict"]
    assert sorted(set(ref) - set(ours)) == [], "keys missing from ours"
    assert sorted(set(ours) - set(ref)) == [], "keys the reference does not have"
    assert {k: s for k, s in ours.items() if s != ref[k]} == {}
    assert sum(p.numel() for p in model.parameters()) == spec["num_parameters"]
    state = model.state_dict()
    fake = {k: torch.zeros(s, dtype=state[k].dtype) for k, s in ref.items()}
    model.load_state_dict(fake, strict=True)


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip(NO_REAL_DATA)
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto, server mode) on loopback for the session; the AWS
    variables point at it while it runs (``tests/s3_server.py``)."""
    pytest.importorskip("moto")
    from tests.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """``s3://<a new bucket>`` on the session's S3 server."""
    from tests.s3_server import new_bucket

    return new_bucket(s3_endpoint)


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """One local Ray cluster (2 CPUs) shared by every ``ray`` test of the session. Its workers
    get the AWS variables of the session's S3 server (``s3_endpoint``), as the nodes of a real
    cluster get theirs from their environment or instance profile."""
    from tests.s3_server import aws_env

    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", **aws_env(s3_endpoint)}
        ray.init(num_cpus=2, runtime_env={"env_vars": env}, log_to_driver=False)
    yield ray
    ray.shutdown()


LEAK_GRACE_S = 60.0  # a finished test's actors and trials release their CPUs well within this


def _cpu_holders(ray) -> list[str]:
    """The live actors and placement groups of the cluster that hold CPUs, for a leak report."""
    from ray.util.state import list_actors, list_placement_groups

    address = ray.get_runtime_context().gcs_address
    held = [
        f"actor {a.class_name} (pid {a.pid}, {a.required_resources})"
        for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True)
        if (a.required_resources or {}).get("CPU")
    ]
    held += [
        f"placement group {g.name or g.placement_group_id} ({g.bundles})"
        for g in list_placement_groups(
            address=address, filters=[("state", "=", "CREATED")], detail=True
        )
    ]
    return held


@pytest.fixture(scope="module", autouse=True)
def _ray_cpus_released():
    """After each test module, with its fixtures torn down (a module's Serve app may hold CPUs
    between its tests), the shared cluster's CPUs must come back within a bounded wait: a
    leaked actor or placement group would starve every later test of the session into a
    timeout far from its cause, so the leak fails here, naming what holds the CPUs."""
    yield
    import sys
    import time

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.monotonic() + LEAK_GRACE_S
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    free = ray.available_resources().get("CPU", 0.0)
    if free < total:
        pytest.fail(
            f"{total - free:g} of {total:g} cluster CPUs still held {LEAK_GRACE_S:g} s after the "
            "module: " + "; ".join(_cpu_holders(ray) or ["(no live actor or group found)"]),
            pytrace=False,
        )


def pytest_collection_finish(session):
    """Test modules block ``ray`` while they are imported (``sys.modules.setdefault("ray",
    None)``) to prove the Ray-free layers import without it; lift the block before the tests run
    so the ``ray`` tier can import it. ``tests/test_no_ray_in_core.py`` checks every module in a
    fresh interpreter, where no earlier import can mask a dependency."""
    import sys

    if "ray" in sys.modules and sys.modules["ray"] is None:
        del sys.modules["ray"]


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip with a reason on machines without CUDA (CI, laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Shared fixtures: thread limits, the real-data folder, one local Ray cluster per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from datasets.ray_env import keep_workers_on_this_environment

REPO_ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)
keep_workers_on_this_environment()  # before any test imports ray


def real_data_root() -> Path | None:
    root = Path(os.environ.get("VOXRAY_REAL_DATA", REPO_ROOT.parent / "shared" / "data"))
    return root if root.is_dir() else None


def shared_root() -> Path | None:
    root = Path(os.environ.get("VOXRAY_SHARED", REPO_ROOT.parent / "shared"))
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real data not found: set VOXRAY_REAL_DATA or place shared/ beside the repo")
    return root


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) shared by every ``ray`` test of the session."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}},
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


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

"""What ``ray job submit --working-dir .`` uploads: Ray's own packaging of this checkout with our
``.rayignore`` leaves out runs, checkpoints, audio, caches, ``.venv`` and ``.git``."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_PACKAGE_MB = 8.0  # code, configs, uv.lock and small test fixtures (~2.5 MB today)

# (path, kept?) planted in a copy of the ignore files, one of each kind the upload must skip
PLANTED = {
    "runs/demo/model.pt": False,
    "runs/demo/ray_results/exp/checkpoint_000001/model.pt": False,
    "ckpts/model.pt": False,
    "ckpts/model.onnx": False,
    "data/spk1/utt1.wav": False,
    "data/spk1/utt2.flac": False,
    "data/shards/shard-000.h5": False,
    "out/utterances.parquet": False,
    "speakers.db": False,
    "speakers.db-wal": False,
    ".venv/lib/python3.11/site-packages/torch/__init__.py": False,
    ".git/objects/ab/cdef": False,
    "ray_jobs/__pycache__/cli.cpython-311.pyc": False,
    ".pytest_cache/v/cache/nodeids": False,
    "ray_jobs/train/job.py": True,
    "ray_jobs/configs/tiny/campplus.yaml": True,
    "serve/serve_config.yaml": True,
}


def _package(root: Path, target: Path) -> list[str]:
    from ray._private.runtime_env.packaging import create_package

    create_package(str(root), target, include_gitignore=True)
    with zipfile.ZipFile(target) as z:
        return z.namelist()


def test_rayignore_leaves_out_runs_checkpoints_audio_and_caches(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO_ROOT / ".rayignore", root / ".rayignore")
    for rel in PLANTED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * 64)
    names = {n.rstrip("/") for n in _package(root, tmp_path / "pkg.zip")}
    kept = {rel for rel in PLANTED if rel in names}
    assert kept == {rel for rel, keep in PLANTED.items() if keep}


def test_the_checkout_uploads_small(tmp_path):
    """This checkout as Ray packages it (its .venv, .git and any runs/ present): small, and none
    of the excluded kinds inside."""
    names = _package(REPO_ROOT, tmp_path / "pkg.zip")
    size_mb = (tmp_path / "pkg.zip").stat().st_size / 2**20
    assert size_mb < MAX_PACKAGE_MB, f"{size_mb:.1f} MB"
    assert "ray_jobs/train/job.py" in names and "serve/serve_config.yaml" in names
    bad_roots = (".venv/", ".git/", "runs/", "artifacts/", "outputs/", ".pytest_cache/")
    assert not [n for n in names if n.startswith(bad_roots) or "__pycache__" in n]
    bad_ext = (".pt", ".wav", ".flac", ".h5", ".parquet", ".db", ".onnx")
    assert not [n for n in names if n.endswith(bad_ext)]


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

"""Layering: models/ and datasets/ (but datasets/ray_data.py) import without Ray, and the
top-level ``datasets`` is ours, not Hugging Face's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_core_imports_without_ray():
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for top in ("models", "datasets")
        for p in (REPO / top).rglob("*.py")
        if p.name != "ray_data.py"
    )
    code = (
        "import sys; sys.modules['ray'] = None\n"
        + "".join(f"import {m}\n" for m in modules)
        + "import models; models.list_models()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_datasets_package_is_ours():
    import datasets

    assert Path(datasets.__file__).resolve().parent == REPO / "datasets"
    assert not hasattr(datasets, "load_dataset"), "Hugging Face datasets shadows ours"

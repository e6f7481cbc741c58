"""3D-Speaker's ``speakerlab`` (the reference trainer, a dev dependency) is installed without the
requirements its wheel declares: pyproject's ``[[tool.uv.dependency-metadata]]`` replaces them
with what the modules we use import. Hugging Face ``datasets`` in particular must stay out, or it
would compete with our top-level ``datasets/`` package."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The speakerlab modules the parity test, compare_reference and the same-budget benchmark import.
USED = (
    "speakerlab.models.campplus.DTDNN",
    "speakerlab.models.campplus.classifier",
    "speakerlab.models.eres2net.ERes2Net",
    "speakerlab.models.eres2net.ERes2NetV2",
    "speakerlab.models.eres2net.ERes2Net_huge",
    "speakerlab.models.ecapa_tdnn.ECAPA_TDNN",
    "speakerlab.models.resnet.ResNet",
    "speakerlab.loss.margin_loss",
    "speakerlab.process.scheduler",
    "speakerlab.process.processor",
    "speakerlab.dataset.dataset",
)


def test_speakerlab_installed_without_its_declared_requirements():
    assert md.version("speakerlab") == "0.0.6"
    declared = {r.split(">")[0].split("<")[0].split("=")[0] for r in md.requires("speakerlab")}
    # what the wheel asks for and we refuse (the check would be vacuous if it stopped asking)
    refused = {"datasets", "modelscope", "funasr", "transformers", "torchvision"}
    assert refused <= declared
    for name in sorted(refused):
        with pytest.raises(md.PackageNotFoundError):
            md.distribution(name)
    assert int(md.version("numpy").split(".")[0]) >= 2  # the wheel says numpy<2


def test_speakerlab_modules_import_and_our_datasets_wins():
    """In a fresh interpreter: every speakerlab module we use imports, and afterwards the
    top-level ``datasets`` is still ours."""
    code = (
        "".join(f"import {m}\n" for m in USED)
        + "import datasets, pathlib\n"
        + "print(pathlib.Path(datasets.__file__).resolve().parent)\n"
        + "print(hasattr(datasets, 'load_dataset'))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    where, hf = res.stdout.split()
    assert Path(where) == REPO / "datasets"
    assert hf == "False"

"""The layer contracts ([tool.importlinter] in pyproject.toml, run by ``make lint``) hold on the
tree, and each one fails on a violating import.

A violation is planted in a copy of the five root packages (their ``.py`` files and
pyproject.toml only, so a copy costs milliseconds), and ``lint-imports`` runs there limited to
the contract under test; it must fail and name both the contract and the planted import. Other
contracts (and violations elsewhere in the tree) cannot make these cases pass or fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("models", "datasets", "ray_jobs", "serve", "tune")
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}

# case -> (contract id, {planted module (path in the copy): its source}, what the report names).
VIOLATIONS = {
    "models imports datasets": (
        "layers",
        {"models/_planted.py": "import datasets.audio\n"},
        "models._planted",
    ),
    "datasets imports ray_jobs": (
        "layers",
        {"datasets/_planted.py": "from ray_jobs.train import experiment\n"},
        "datasets._planted",
    ),
    "serve imports ray_jobs": (
        "layers",
        {"serve/_planted.py": "import ray_jobs.cli\n"},
        "serve._planted",
    ),
    "ray_jobs imports serve outside the bench exception": (
        "layers",
        {"ray_jobs/bench/_planted.py": "from serve.bench import benchmark_service\n"},
        "ray_jobs.bench._planted",
    ),
    "datasets imports ray": (
        "ray-free-core",
        {"datasets/_planted.py": "def f():\n    import ray.data\n"},
        "datasets._planted",
    ),
    "models imports ray_data": (
        "ray-data-glue",
        {"models/_planted.py": "import datasets.ray_data\n"},
        "models._planted",
    ),
    "a data builder reaches a CLI": (
        "train-not-cli",
        {"ray_jobs/train/data/_planted.py": "import ray_jobs.cli\n"},
        "ray_jobs.train.data._planted",
    ),
    "a data builder imports an evaluation CLI": (
        "train-not-cli",
        {"ray_jobs/train/data/_planted.py": "from ray_jobs.evaluate.cli import speaker\n"},
        "ray_jobs.train.data._planted",
    ),
    "a data builder imports a job's CLI": (
        "train-not-cli",
        {"ray_jobs/train/data/_planted.py": "from ray_jobs.train import cli\n"},
        "ray_jobs.train.data._planted",
    ),
    "a job's core parses arguments": (
        "argparse-in-cli",
        {"ray_jobs/extract_target/core.py": "import argparse\n"},
        "ray_jobs.extract_target.core",
    ),
    "a Ray adapter parses arguments": (
        "argparse-in-cli",
        {"ray_jobs/diarize/job.py": "from argparse import ArgumentParser\n"},
        "ray_jobs.diarize.job",
    ),
    "a module imports a __main__": (
        "no-main-imports",
        {"ray_jobs/train/_planted.py": "import ray_jobs.evaluate.__main__\n"},
        "ray_jobs.train._planted",
    ),
    "a cycle in tune": (
        "tune-acyclic",
        {
            "tune/_planted_a.py": "import tune._planted_b\n",
            "tune/_planted_b.py": "import tune._planted_a\n",
        },
        "_planted_",
    ),
}


def _lint_imports(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe) if exe.exists() else "lint-imports", "--no-cache", "--no-logo"]
    cmd += [arg for c in contracts for arg in ("--contract", c)]
    # The root packages are found on the working directory (lint-imports puts it on sys.path);
    # an inherited PYTHONPATH could point back at the real tree.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["COLUMNS"] = "200"  # fewer wrapped contract names in the report
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy_tree(dst: Path) -> Path:
    for top in ROOTS:
        for src in (REPO / top).rglob("*.py"):
            out = dst / src.relative_to(REPO)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
    shutil.copyfile(REPO / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_contracts_hold_on_the_tree():
    res = _lint_imports(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in res.stdout


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_a_violating_import_breaks_its_contract(case, tmp_path):
    contract, planted, importer = VIOLATIONS[case]
    root = _copy_tree(tmp_path)
    for rel, text in planted.items():
        (root / rel).write_text(text)
    res = _lint_imports(root, contract)
    report = res.stdout + res.stderr
    assert res.returncode != 0, report
    assert f"{CONTRACTS[contract]} BROKEN" in " ".join(report.split()), report
    assert importer in report, report


def test_every_contract_has_a_violation_case():
    assert {contract for contract, _, _ in VIOLATIONS.values()} == set(CONTRACTS)

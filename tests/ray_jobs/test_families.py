"""Families plug into train, evaluate and export the same way: ``<package>.<family>`` found by
name. A new family's module is discovered without a dispatcher edit; an unknown family fails with
a message listing the known ones; every registered family has a builder and an evaluator; ONNX
files name their family in their metadata; evaluation cores hold no CLI code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models.registry import get_entry, list_models
from ray_jobs.evaluate.cli import checkpoint_family, onnx_family
from ray_jobs.families import UnknownFamilyError, family_module, known_families

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ("classify", "codec", "speaker", "tse")


@pytest.fixture
def plugin_package(tmp_path, monkeypatch):
    """A package with one family module (``newfam``) and one module that is not a family."""
    pkg = tmp_path / "fam_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "newfam.py").write_text("def main(argv=None):\n    return 7\n")
    (pkg / "helpers.py").write_text("X = 1\n")  # no hook: not a family
    (pkg / "broken.py").write_text(
        "import no_such_module_xyz\n\ndef main(argv=None):\n    return 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fam_plugins"
    for name in [m for m in sys.modules if m.startswith("fam_plugins")]:
        del sys.modules[name]


def test_new_family_is_discovered_by_name(plugin_package):
    module = family_module(plugin_package, "newfam", "main", "evaluator")
    assert module.main() == 7


def test_unknown_family_lists_the_known_ones(plugin_package):
    with pytest.raises(UnknownFamilyError, match=r"no evaluator for the 'nope' family") as exc:
        family_module(plugin_package, "nope", "main", "evaluator")
    assert "families with one: newfam" in str(exc.value)
    with pytest.raises(UnknownFamilyError):  # a module without the hook is not a family
        family_module(plugin_package, "helpers", "main", "evaluator")
    with pytest.raises(UnknownFamilyError):  # never an import of an arbitrary dotted path
        family_module(plugin_package, "newfam.x", "main", "evaluator")


def test_a_family_module_with_a_missing_dependency_is_not_hidden(plugin_package):
    with pytest.raises(ModuleNotFoundError, match="no_such_module_xyz"):
        family_module(plugin_package, "broken", "main", "evaluator")


def test_every_registered_family_trains_and_evaluates_the_same_way():
    registered = {get_entry(m).family for m in list_models()}
    assert registered == set(FAMILIES)
    assert known_families("ray_jobs.evaluate.cli", "main") == list(FAMILIES)
    assert known_families("ray_jobs.train.data", "build") == list(FAMILIES)
    # export: every family with a deployable ONNX graph (TSE has none yet)
    assert known_families("ray_jobs.export", "graph") == ["classify", "codec", "speaker"]


def test_export_of_a_family_without_a_graph_says_which_have_one(tmp_path):
    from models.onnx_export import ExportError
    from ray_jobs.export.core import export_model

    tse = next(p for m in list_models("tse") for p in models.list_presets(m) if "tiny" in p)
    model = models.build_model(tse)
    with pytest.raises(ExportError, match=r"'tse' family.*classify, codec, speaker"):
        export_model(model, tmp_path / "x.onnx", model_id="t")
    assert not (tmp_path / "x.onnx").exists()


def _onnx_with(path: Path, props: dict[str, str]) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    proto = helper.make_model(graph)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))
    return path


def test_onnx_family_from_metadata(tmp_path):
    pytest.importorskip("onnx")
    assert onnx_family(_onnx_with(tmp_path / "a.onnx", {"family": "codec"})) == "codec"
    clf = next(m for m in list_models("classify"))
    assert onnx_family(_onnx_with(tmp_path / "b.onnx", {"model_name": clf})) == "classify"
    # files exported before the family key existed are speaker embedders
    assert checkpoint_family(_onnx_with(tmp_path / "c.onnx", {})) == "speaker"
    with pytest.raises(FileNotFoundError):
        checkpoint_family(tmp_path / "missing.onnx")


def test_speaker_export_names_its_family(tmp_path):
    pytest.importorskip("onnxruntime")
    from ray_jobs.export.core import export_checkpoint

    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "s.pt")
    out = export_checkpoint(ckpt, tmp_path / "s.onnx")
    assert onnx_family(out) == "speaker" and checkpoint_family(ckpt) == "speaker"


def test_evaluation_cores_hold_no_cli_code():
    """Training imports the cores, so they must not carry argparse/main (train -> core only)."""
    for family in (*FAMILIES, "lyra"):
        source = (REPO / "ray_jobs" / "evaluate" / f"{family}.py").read_text()
        assert "argparse" not in source and "def main(" not in source, family
        assert "ray_jobs.train" not in source, family  # never the reverse dependency


def test_user_error_is_one_log_line_on_stderr_and_exit_2(tmp_path):
    code = (
        "import sys, runpy; sys.modules['ray'] = None; "
        "sys.argv = ['evaluate'] + sys.argv[1:]; "
        "runpy.run_module('ray_jobs.evaluate', run_name='__main__')"
    )
    args = ["--checkpoint", str(tmp_path / "none.pt"), "--data-root", str(tmp_path), "--json"]
    res = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "ERROR" in lines[0], res.stderr


def test_experiment_loader_layers(tmp_path):
    """defaults < --set < flags, and flags that were not given (None) are skipped."""
    from ray_jobs.train.experiment import experiment_dict, load_experiment

    cfg = tmp_path / "e.yaml"
    cfg.write_text(json.dumps({"model": {"name": "campplus-tiny"}, "train": {"epochs": 3}}))
    data = experiment_dict(
        cfg,
        ["data.val_speakers=5", "train.epochs=4"],
        defaults={"data.val_speakers": 12, "data.train": "a"},
        flags={"train.epochs": 9, "data.val": None},
    )
    assert data["data"] == {"val_speakers": 5, "train": "a"}
    assert data["train"]["epochs"] == 9
    exp = load_experiment(cfg, ["optim.lr=0.5"], flags={"data.train": "b"})
    assert exp.optim.lr == 0.5 and exp.data.train == "b" and exp.train.epochs == 3
    with pytest.raises(ValueError, match="unknown"):
        load_experiment(cfg, ["optim.nope=1"])

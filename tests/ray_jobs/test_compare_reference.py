"""Embedding parity with 3D-Speaker for every reference entry, against the installed
``speakerlab`` package (no checkout needed, so it runs in CI on every change): the reference
model with randomised weights and BatchNorm statistics, its state dict loaded strictly into our
``3dspeaker/<entry>`` preset, the same fbank input, the same embeddings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.modules.setdefault("ray", None)

from ray_jobs.compare_reference.core import compare_entry, import_reference_class  # noqa: E402
from tests.conftest import REFERENCE_ENTRIES as ENTRIES  # noqa: E402
from tests.conftest import reference_state_dicts  # noqa: E402

pytest.importorskip("speakerlab")


def test_every_listed_entry_is_covered():
    assert sorted(reference_state_dicts()) == sorted(ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES)
def test_embeddings_match_speakerlab(entry):
    spec = reference_state_dicts()[entry]
    res = compare_entry(entry, spec, None, repeats=0, seed=0, batch=2)
    assert res["status"] == "ok", res
    assert res["num_parameters"] == res["num_parameters_ref"] == spec["num_parameters"]
    assert res["max_abs_ref"] > 0.1  # a real embedding, not zeros agreeing with zeros
    assert res["max_abs_diff"] < 1e-4 * max(1.0, res["max_abs_ref"]), res


def test_installed_reference_is_the_default():
    cls = import_reference_class(None, "models.campplus.DTDNN.CAMPPlus")
    assert cls.__module__ == "speakerlab.models.campplus.DTDNN"
    with pytest.raises(FileNotFoundError, match="not a 3D-Speaker checkout"):
        import_reference_class(Path("/nonexistent"), "models.x.Y")

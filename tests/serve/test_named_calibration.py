"""A published model by name (``pip:resemblyzer``) takes its operating point from the calibration
record ``ray_jobs.evaluate --calibrate`` writes beside the *converted file in the cache*, not
from a ``pip:resemblyzer.calibration.json`` beside the name (the README's ``make serve
CKPT=pip:resemblyzer`` path). Needs the ``ray`` package (the deployment module), not a cluster:
the serve modules are imported in the test, after collection, because other test modules block
``ray`` while they are collected (``tests/conftest.py``)."""

import numpy as np
import pytest

from models.calibration import (  # noqa: E402
    ScoreNorm,
    calibration_from_metrics,
    calibration_path,
    write_calibration,
)
from models.hub import resolve_checkpoint  # noqa: E402
from models.pipelines.speaker import SpeakerEmbedder  # noqa: E402

NAME = "pip:resemblyzer"


def test_named_model_reads_the_record_beside_its_cached_file(tmp_path, monkeypatch):
    from serve import schemas as S
    from serve.deployments.speaker import model_info
    from serve.thresholds import check_calibration, operating_point

    monkeypatch.setenv("VOXRAY_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a record beside the *name* would be looked up here
    ckpt = resolve_checkpoint(NAME)
    assert ckpt.is_relative_to(tmp_path / "cache")
    embedder = SpeakerEmbedder.from_checkpoint(ckpt)
    spec = {"path": NAME, "backend": "torch"}
    assert model_info("default", spec, embedder)["calibration"] is None  # not calibrated yet

    metrics = {"eer": 0.01, "eer_threshold": 0.73, "num_trials": 100}
    # where ray_jobs.evaluate --calibrate --checkpoint pip:resemblyzer writes it
    path, written = write_calibration(
        ckpt, embedder.model_id, calibration_from_metrics(metrics, data="dev")
    )
    assert written and path == calibration_path(ckpt)
    info = model_info("default", spec, embedder)
    assert info["calibration_file"] == str(path)
    assert operating_point(info, None) == (0.73, f"calibration: {path} (none, eer)")

    # a cohort (AS-norm scores) is checked against the same record, at build time
    np.save(tmp_path / "c.npy", np.eye(embedder.embed_dim, dtype=np.float32)[:8])
    named = S.ModelSpec(path=NAME, cohort=str(tmp_path / "c.npy"))
    with pytest.raises(ValueError, match="not 'asnorm'"):
        check_calibration("default", named, None)  # the record is found: it lacks asnorm
    norm = ScoreNorm("asnorm", top_k=2, cohort="c.npy", cohort_size=8)
    write_calibration(
        ckpt, embedder.model_id, calibration_from_metrics(metrics, data="dev", score_norm=norm)
    )
    check_calibration("default", named, None)

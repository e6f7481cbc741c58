"""models/calibration.py: the calibration record beside a checkpoint (write, read, stale,
one entry per score normalisation, clear errors)."""

import json
import sys

sys.modules.setdefault("ray", None)

import pytest  # noqa: E402

from models.calibration import (  # noqa: E402
    CalibrationError,
    ScoreNorm,
    calibration_from_metrics,
    calibration_path,
    eer_threshold,
    read_calibration,
    write_calibration,
)

METRICS = {
    "eer": 0.1, "eer_threshold": 0.37, "min_dcf_0.01": 0.5, "min_dcf_0.01_threshold": 0.62,
    "min_dcf_0.05": 0.4, "min_dcf_0.05_threshold": 0.55, "num_trials": 100, "num_target": 40,
    "num_nontarget": 60, "trials_source": "all_pairs",
}  # fmt: skip


def test_write_read_entries_and_stale(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    assert read_calibration(ckpt) is None and eer_threshold(None) is None
    path, written = write_calibration(ckpt, "m:1", calibration_from_metrics(METRICS, data="dev"))
    assert written and path == calibration_path(ckpt) == tmp_path / "model.pt.calibration.json"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic
    rec = read_calibration(ckpt, "m:1")
    entry = rec.entry("none")
    assert entry.thresholds == {"eer": 0.37, "min_dcf_0.01": 0.62, "min_dcf_0.05": 0.55}
    assert entry.trials == {"num_trials": 100, "num_target": 40, "num_nontarget": 60,
                            "source": "all_pairs"}  # fmt: skip
    assert entry.data == "dev" and entry.dcf["p_targets"] == [0.01, 0.05]
    assert eer_threshold(rec) == 0.37
    # AS-norm thresholds are another entry; asking for a missing one names the fix
    with pytest.raises(CalibrationError, match="--cohort"):
        rec.entry("asnorm")
    norm = ScoreNorm("asnorm", top_k=50, cohort="c.parquet", cohort_size=200)
    asn = calibration_from_metrics({**METRICS, "eer_threshold": 2.5}, data="dev", score_norm=norm)
    write_calibration(ckpt, "m:1", asn)
    rec = read_calibration(ckpt, "m:1")
    assert set(rec.entries) == {"none", "asnorm"}
    assert rec.entry("asnorm").threshold() == 2.5 and rec.entry("asnorm").score_norm == norm
    # overwrite=False leaves an existing entry alone
    other = calibration_from_metrics({**METRICS, "eer_threshold": 0.9}, data="other")
    assert write_calibration(ckpt, "m:1", other, overwrite=False)[1] is False
    assert read_calibration(ckpt).entry("none").threshold() == 0.37
    # another model id (the checkpoint was replaced): stale, not read, and replaced on write
    assert read_calibration(ckpt, "m:2") is None
    write_calibration(ckpt, "m:2", other, overwrite=False)
    rec = read_calibration(ckpt, "m:2")
    assert set(rec.entries) == {"none"} and rec.entry().threshold() == 0.9
    assert json.loads(calibration_path(ckpt).read_text())["checkpoint"] == "model.pt"


def test_bad_records_and_values(tmp_path):
    ckpt = tmp_path / "m.pt"
    calibration_path(ckpt).write_text("{not json")
    with pytest.raises(CalibrationError, match="not a readable"):
        read_calibration(ckpt)
    calibration_path(ckpt).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CalibrationError, match="voxray.calibration/1"):
        read_calibration(ckpt)
    # a broken record is replaced by a good one
    write_calibration(ckpt, "m:1", calibration_from_metrics(METRICS, data="dev"))
    assert read_calibration(ckpt).entry().threshold("min_dcf_0.05") == 0.55
    with pytest.raises(CalibrationError, match="no 'p' threshold"):
        read_calibration(ckpt).entry().threshold("p")
    with pytest.raises(CalibrationError, match="unknown score normalisation"):
        ScoreNorm("znorm")
    with pytest.raises(CalibrationError, match="top_k"):
        ScoreNorm("asnorm")
    with pytest.raises(CalibrationError, match="verification_metrics"):
        calibration_from_metrics({"eer": 0.1}, data="x")

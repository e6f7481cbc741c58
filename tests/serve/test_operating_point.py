"""serve/thresholds.py: the operating point: explicit threshold > calibration record > 0.5, and a
record without thresholds for the scores in use (AS-norm) is refused, as is such a config."""

import sys

sys.modules.setdefault("ray", None)  # the threshold rule must not need Ray

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.calibration import ScoreNorm, calibration_from_metrics, write_calibration  # noqa: E402
from serve import schemas as S  # noqa: E402
from serve.errors import ServiceError  # noqa: E402
from serve.thresholds import (  # noqa: E402
    DEFAULT_THRESHOLD,
    check_calibration,
    operating_point,
)

CAL = {"none": {"thresholds": {"eer": 0.31, "min_dcf_0.01": 0.6, "min_dcf_0.05": 0.5}}}


def test_threshold_sources():
    info = {"name": "default", "calibration": CAL, "calibration_file": "m.pt.calibration.json"}
    assert operating_point(info, None) == (0.31, "calibration: m.pt.calibration.json (none, eer)")
    assert operating_point(info, None, "min_dcf_0.01")[0] == 0.6
    assert operating_point(info, 0.7) == (0.7, "config")
    assert operating_point({"name": "x", "calibration": None}, None) == (
        DEFAULT_THRESHOLD,
        "default",
    )
    asn = {**info, "score_norm": "asnorm"}
    with pytest.raises(ServiceError, match="--cohort") as err:
        operating_point(asn, None)  # cosine thresholds on AS-norm scores: refused
    assert err.value.status == 409 and err.value.code == "calibration_mismatch"
    assert operating_point(asn, 3.0) == (3.0, "config")
    with pytest.raises(ServiceError, match="nothing"):
        operating_point({"name": "x", "calibration": None, "score_norm": "asnorm"}, None)


def test_cohort_without_asnorm_calibration_is_refused_at_build(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"x")
    np.save(tmp_path / "c.npy", np.eye(4, dtype=np.float32))
    spec = S.ModelSpec(path=str(ckpt), cohort=str(tmp_path / "c.npy"))
    with pytest.raises(ValueError, match="no calibration record"):
        check_calibration("default", spec, None)
    metrics = {"eer": 0.1, "eer_threshold": 0.3, "num_trials": 4}
    write_calibration(ckpt, "m:1", calibration_from_metrics(metrics, data="dev"))
    with pytest.raises(ValueError, match="not 'asnorm'"):
        check_calibration("default", spec, None)
    check_calibration("default", spec, 2.0)  # an explicit threshold is the user's choice
    norm = ScoreNorm("asnorm", top_k=2, cohort="c.npy", cohort_size=4)
    write_calibration(ckpt, "m:1", calibration_from_metrics(metrics, data="dev", score_norm=norm))
    check_calibration("default", spec, None)
    with pytest.raises(ValueError, match="cohort applies to checkpoint"):
        S.AppArgs(models={"a": {"path": str(ckpt)}}, cohort="c.npy")
    args = S.AppArgs(checkpoint=str(ckpt), cohort=str(tmp_path / "c.npy"))
    assert args.models["default"].cohort == str(tmp_path / "c.npy") and args.threshold is None

"""The service's operating point: which threshold verify and identify decide at, and why.

Ray-free (tested without Ray). An explicit threshold (``AppArgs.threshold``, ``--threshold``,
``POST /config``) wins; else the active model's calibration record (``models.calibration``,
``<checkpoint>.calibration.json``, written by ``ray_jobs.evaluate``) at
``AppArgs.operating_point`` for the score normalisation in use (``none``: cosine; ``asnorm``: a
cohort is configured); else 0.5 for cosine scores. A threshold measured on one score scale is
never applied to another: AS-norm scores without AS-norm thresholds are refused, at build time
(:func:`check_calibration`) and per request (:func:`operating_point`, 409).
"""

from __future__ import annotations

from typing import Any

from datasets.cohort import load_cohort
from models.calibration import (
    DEFAULT_COSINE_THRESHOLD,
    CalibrationError,
    calibration_path,
    read_calibration,
)
from models.hub import resolve_checkpoint
from serve import schemas as S
from serve.errors import ServiceError

DEFAULT_THRESHOLD = DEFAULT_COSINE_THRESHOLD  # cosine, when neither config nor a record gives one


def operating_point(
    info: dict[str, Any], override: float | None, point: str = "eer"
) -> tuple[float, str]:
    """The threshold of a model (``info`` from ``EmbeddingModel.info``) and where it came from.

    ``override`` (``AppArgs.threshold``, ``POST /config``) wins (``"config"``); else the
    record's entry for the model's score normalisation at ``point``
    (``"calibration: <file> (<norm>, <point>)"``); else ``DEFAULT_THRESHOLD`` (``"default"``)
    for cosine scores. A record without an entry for the normalisation in use, or AS-norm
    without any record, is refused (409 ``calibration_mismatch``): a threshold measured on one
    score scale means nothing on another.
    """
    norm = info.get("score_norm", "none")
    if override is not None:
        return float(override), "config"
    cal = info.get("calibration")
    if cal is not None and norm in cal:
        return float(cal[norm]["thresholds"][point]), (
            f"calibration: {info.get('calibration_file')} ({norm}, {point})"
        )
    if cal is None and norm == "none":
        return DEFAULT_THRESHOLD, "default"
    have = sorted(cal) if cal is not None else []
    raise ServiceError(
        409,
        "calibration_mismatch",
        f"model {info.get('name')!r} scores with score normalisation {norm!r} but its "
        f"calibration record has thresholds for {have or 'nothing'}; calibrate it with that "
        f"normalisation (python -m ray_jobs.evaluate --calibrate"
        f"{' --cohort PATH' if norm == 'asnorm' else ''} ...) or set a threshold "
        "(--threshold, POST /config)",
    )


def check_calibration(name: str, spec: S.ModelSpec, threshold: float | None) -> None:
    """Refuse, in the driver, a model whose scores are AS-normalised (``spec.cohort``) without a
    threshold for them: no explicit ``threshold`` and no ``asnorm`` entry in its calibration
    record. The cohort file is read once here too, so a bad one fails before deployment."""
    if spec.cohort is None:
        return
    load_cohort(spec.cohort)
    if threshold is not None:
        return
    ckpt = resolve_checkpoint(spec.path)  # a name's record lies beside its cached file
    record = read_calibration(ckpt)
    if record is None:
        raise CalibrationError(
            f"model {name!r} has a cohort (AS-norm scores) but no calibration record "
            f"({calibration_path(ckpt)}); run python -m ray_jobs.evaluate --calibrate "
            f"--cohort {spec.cohort} --checkpoint {spec.path} --data-root DEV, or give --threshold"
        )
    record.entry("asnorm")  # raises CalibrationError naming the fix

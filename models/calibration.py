"""Calibration records: the operating points measured for a speaker model, stored beside it.

Evaluation (``ray_jobs/evaluate/speaker.py``; the training job's final evaluation and
``python -m ray_jobs.evaluate --calibrate``) measures the EER threshold and the minDCF thresholds
of a checkpoint on labelled trials and writes them to ``<checkpoint>.calibration.json``, the
checkpoint's neighbour (for a hub model, beside the converted checkpoint in the cache). The
service takes its default threshold from the record (``serve``), and diarization its
clustering threshold (``models.pipelines.diarize``). JSON, one document per checkpoint::

    {"format": "voxray.calibration/1", "model_id": "ecapa_tdnn:1a2b3c4d5e6f",
     "checkpoint": "model.pt",
     "entries": {"none":   {thresholds, metrics, dcf, trials, data, score_norm, created},
                 "asnorm": {...}}}

One entry per score normalisation (``none``: raw cosine; ``asnorm``: adaptive s-norm against a
cohort, ``models.pipelines.scoring.as_norm``), because a threshold only means something on the
score scale it was measured on: a caller that normalises scores asks for that entry and gets a
:class:`CalibrationError` naming the fix when it is missing. A record whose ``model_id`` is not
the checkpoint's (the checkpoint was overwritten) is stale and is replaced, never read.
Pure JSON beside a file; written atomically (temp file + rename). No torch, no Ray.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "voxray.calibration/1"
SUFFIX = ".calibration.json"
NORMS = ("none", "asnorm")
# operating points a caller may pick a threshold by (the keys of Calibration.thresholds)
OPERATING_POINTS = ("eer", "min_dcf_0.01", "min_dcf_0.05")
# the cosine threshold when neither the caller nor a calibration record gives one
DEFAULT_COSINE_THRESHOLD = 0.5


class CalibrationError(ValueError):
    """A calibration record is malformed, stale, or lacks what the caller needs."""


@dataclass(frozen=True)
class ScoreNorm:
    """How scores were normalised: ``none`` (cosine) or ``asnorm`` against a cohort."""

    method: str = "none"  # one of NORMS
    top_k: int | None = None  # AS-norm: cohort scores averaged per side
    cohort: str | None = None  # where the cohort came from (a path), for the record
    cohort_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in NORMS:
            raise CalibrationError(f"unknown score normalisation {self.method!r}; use {NORMS}")
        if self.method == "asnorm" and (self.top_k is None or self.top_k < 1):
            raise CalibrationError("AS-norm needs top_k >= 1")


@dataclass(frozen=True)
class Calibration:
    """One entry of a record: thresholds of one score normalisation, and how they were measured.

    ``thresholds``: ``{"eer": t, "min_dcf_0.01": t, "min_dcf_0.05": t}``; a trial is accepted
    when ``score >= t``. ``dcf``: ``{"c_miss", "c_fa", "p_targets"}``. ``trials``:
    ``{"num_trials", "num_target", "num_nontarget", "source"}``.
    """

    thresholds: dict[str, float]
    metrics: dict[str, float]  # eer, min_dcf_0.01, min_dcf_0.05 at those thresholds
    trials: dict[str, Any]
    data: str  # the data the trials came from (a --data-root, a val split)
    score_norm: ScoreNorm = field(default_factory=ScoreNorm)
    dcf: dict[str, Any] = field(
        default_factory=lambda: {"c_miss": 1.0, "c_fa": 1.0, "p_targets": [0.01, 0.05]}
    )
    created: str = ""

    def threshold(self, operating_point: str = "eer") -> float:
        if operating_point not in self.thresholds:
            raise CalibrationError(
                f"no {operating_point!r} threshold in the calibration; it has "
                f"{sorted(self.thresholds)}"
            )
        return float(self.thresholds[operating_point])


@dataclass(frozen=True)
class CalibrationRecord:
    path: Path
    model_id: str
    entries: dict[str, Calibration]

    def entry(self, norm: str = "none") -> Calibration:
        """The calibration of score normalisation ``norm``; a clear error when it is absent."""
        if norm not in self.entries:
            raise CalibrationError(
                f"the calibration record {self.path} has thresholds for score normalisation "
                f"{sorted(self.entries)}, not {norm!r}: scores normalised one way cannot use "
                f"thresholds measured another way. Calibrate with that normalisation "
                f"(python -m ray_jobs.evaluate --calibrate"
                f"{' --cohort PATH' if norm == 'asnorm' else ''} ...) or give the threshold "
                f"explicitly."
            )
        return self.entries[norm]


def eer_threshold(record: CalibrationRecord | None) -> float | None:
    """The cosine (``none``) EER threshold of a record, or None: what diarization maps to its
    clustering threshold (``models.pipelines.diarize.calibrated_threshold``)."""
    if record is None or "none" not in record.entries:
        return None
    return record.entries["none"].threshold("eer")


def cosine_threshold(
    record: CalibrationRecord | None, operating_point: str = "eer"
) -> tuple[float, str]:
    """The raw-cosine (``none``) threshold at ``operating_point`` and where it came from:
    ``(t, "calibration: <file> (none, <point>)")`` from a record with a ``none`` entry, else
    ``(DEFAULT_COSINE_THRESHOLD, "default")``. What ``python -m ray_jobs.verify`` decides at
    (the service's rule for cosine scores, ``serve/thresholds.py``)."""
    if record is None or "none" not in record.entries:
        return DEFAULT_COSINE_THRESHOLD, "default"
    t = record.entries["none"].threshold(operating_point)
    return t, f"calibration: {record.path} (none, {operating_point})"


def calibration_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.calibration.json``."""
    return Path(f"{os.fspath(checkpoint)}{SUFFIX}")


def calibration_from_metrics(
    metrics: dict[str, Any], *, data: str, score_norm: ScoreNorm = ScoreNorm()
) -> Calibration:
    """An entry from ``models.metrics.verification_metrics`` output (plus ``trials_source``)."""
    missing = [k for k in ("eer", "eer_threshold", "num_trials") if k not in metrics]
    if missing:
        raise CalibrationError(f"metrics lack {missing}; pass verification_metrics() output")
    thresholds = {"eer": float(metrics["eer_threshold"])}
    values = {"eer": float(metrics["eer"])}
    for p in ("0.01", "0.05"):
        if f"min_dcf_{p}_threshold" in metrics:
            thresholds[f"min_dcf_{p}"] = float(metrics[f"min_dcf_{p}_threshold"])
            values[f"min_dcf_{p}"] = float(metrics[f"min_dcf_{p}"])
    return Calibration(
        thresholds=thresholds,
        metrics=values,
        trials={
            "num_trials": int(metrics["num_trials"]),
            "num_target": int(metrics.get("num_target", 0)),
            "num_nontarget": int(metrics.get("num_nontarget", 0)),
            "source": str(metrics.get("trials_source", "")),
        },
        data=str(data),
        score_norm=score_norm,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _entry_from_json(d: dict[str, Any], where: str) -> Calibration:
    try:
        return Calibration(
            thresholds={k: float(v) for k, v in d["thresholds"].items()},
            metrics={k: float(v) for k, v in d.get("metrics", {}).items()},
            trials=dict(d.get("trials", {})),
            data=str(d.get("data", "")),
            score_norm=ScoreNorm(**d.get("score_norm", {})),
            dcf=dict(d.get("dcf", {})),
            created=str(d.get("created", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CalibrationError(f"{where}: malformed calibration entry: {exc}") from exc


def _load(path: Path) -> CalibrationRecord:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CalibrationError(f"{path} is not a readable calibration record: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationError(f"{path} is not a {FORMAT} record")
    entries = {
        norm: _entry_from_json(e, f"{path} [{norm}]")
        for norm, e in (doc.get("entries") or {}).items()
    }
    return CalibrationRecord(path=path, model_id=str(doc.get("model_id", "")), entries=entries)


def read_calibration(
    checkpoint: str | os.PathLike, model_id: str | None = None
) -> CalibrationRecord | None:
    """The record beside ``checkpoint``, or None when there is none or it is stale (its
    ``model_id`` differs from ``model_id``: the checkpoint changed since it was calibrated).
    A malformed record raises :class:`CalibrationError`."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    record = _load(path)
    if model_id is not None and record.model_id != model_id:
        return None
    return record


def write_calibration(
    checkpoint: str | os.PathLike,
    model_id: str,
    calibration: Calibration,
    *,
    overwrite: bool = True,
) -> tuple[Path, bool]:
    """Store ``calibration`` as the entry of its score normalisation -> ``(path, written)``.

    Other normalisations' entries of the same model are kept; a stale record (another
    ``model_id``) is replaced. With ``overwrite=False`` an existing entry of the same
    normalisation is left alone (``written`` is False).
    """
    path = calibration_path(checkpoint)
    entries: dict[str, Calibration] = {}
    if path.is_file():
        try:
            old = _load(path)
        except CalibrationError:
            old = None  # unreadable: replaced by a good one
        if old is not None and old.model_id == model_id:
            entries = dict(old.entries)
    norm = calibration.score_norm.method
    if norm in entries and not overwrite:
        return path, False
    entries[norm] = calibration
    doc = {
        "format": FORMAT,
        "model_id": model_id,
        "checkpoint": Path(checkpoint).name,
        "entries": {k: asdict(v) for k, v in sorted(entries.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, True

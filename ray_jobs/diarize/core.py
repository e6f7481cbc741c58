"""Ray-free core of batch diarization (``ray_jobs/diarize/job.py`` is the Ray Data glue).

Plain functions over lists of rows, tested without a cluster:

- :func:`list_inputs`: a folder (recursive), one audio file, or a list file (one path a line)
  -> rows ``{"uri", "path"}``. The uri is the file stem with whitespace replaced by ``_`` (RTTM
  fields are whitespace-separated). Two inputs with the same uri are refused before any work
  (:class:`DiarizeJobError` lists them): the uri names the output files and is the key that
  matches reference RTTMs, so silently renaming one would score it against nothing;
- (the config itself, ``diarization_config``, lives with the pipeline in ``models/pipelines/diarize.py``);
- :func:`diarize_rows`: decode and diarize each row; a file that fails becomes a row with its
  ``error`` (never an exception), so one bad file never blocks the others;
- :func:`write_outputs`: ``rttm/<uri>.rttm``, ``segments/<uri>.json``, ``failures.json``;
- :func:`der_report` / :func:`format_der_markdown`: per-file DER against reference RTTMs and
  the total over files from summed seconds (a long file weighs more than a short one, as in
  md-eval and pyannote's aggregate), not an average of per-file ratios.

The pipeline itself is ``models.pipelines.diarize.Diarizer`` (VAD, window embeddings,
clustering, resegmentation); scoring is ``models.metrics.diarization_error_rate``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datasets.audio import AUDIO_EXTENSIONS, load_audio
from datasets.rttm import read_rttm, read_uem
from models.calibration import eer_threshold, read_calibration
from models.config import ConfigError
from models.metrics import diarization_error_rate
from models.pipelines.diarize import Diarizer
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.cli import existing_checkpoint

log = logging.getLogger("ray_jobs.diarize.job")


class DiarizeJobError(ValueError):
    """A problem with the job's inputs or arguments that the user can fix."""


# ---------------------------------------------------------------------------------------------
# Inputs and config


def uri_of(path: str | Path) -> str:
    """RTTM uri of an audio file: its stem, whitespace replaced by ``_``."""
    return "_".join(Path(path).stem.split()) or "audio"


def list_inputs(source: str | Path) -> list[dict[str, str]]:
    """Audio inputs as rows ``{"uri", "path"}`` sorted by uri.

    ``source`` is a folder (searched recursively for ``AUDIO_EXTENSIONS``), one audio file, or a text
    file listing one audio path per line (``#`` comments and blank lines skipped; relative
    paths are relative to the list file). Duplicate uris raise :class:`DiarizeJobError`.
    """
    src = Path(source)
    if src.is_dir():
        paths = sorted(
            p for p in src.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        )
    elif src.is_file() and src.suffix.lower() in AUDIO_EXTENSIONS:
        paths = [src]
    elif src.is_file():
        paths = []
        for line in src.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                p = Path(line)
                paths.append(p if p.is_absolute() else src.parent / p)
    else:
        raise DiarizeJobError(f"--input {source}: no such file or folder")
    if not paths:
        raise DiarizeJobError(f"--input {source}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    by_uri: dict[str, list[Path]] = {}
    for p in paths:
        by_uri.setdefault(uri_of(p), []).append(p)
    clashes = {u: ps for u, ps in by_uri.items() if len(ps) > 1}
    if clashes:
        shown = "; ".join(f"{u}: {', '.join(map(str, ps))}" for u, ps in sorted(clashes.items()))
        raise DiarizeJobError(
            f"inputs share a uri (the file stem names the RTTM and matches the reference): "
            f"{shown}. Rename the files or run them as separate jobs"
        )
    return [{"uri": u, "path": str(ps[0].resolve())} for u, ps in sorted(by_uri.items())]


def speaker_bounds(
    num_speakers: int | None, min_speakers: int | None, max_speakers: int | None
) -> dict[str, int | None]:
    """Validated keyword arguments of ``Diarizer.__call__``."""
    for name, v in (("num", num_speakers), ("min", min_speakers), ("max", max_speakers)):
        if v is not None and v < 1:
            raise DiarizeJobError(f"--{name}-speakers must be >= 1, got {v}")
    if min_speakers and max_speakers and min_speakers > max_speakers:
        raise DiarizeJobError("--min-speakers must be <= --max-speakers")
    return {
        "num_speakers": num_speakers,
        "min_speakers": min_speakers,
        "max_speakers": max_speakers,
    }


def diarization_model(checkpoint: str | Path) -> tuple[Path, SpeakerEmbedder, float | None]:
    """``--checkpoint`` (a file, a URI or a published model by name, fetched once here) ->
    ``(path, embedder, EER threshold of its calibration record or None)``; the threshold sets
    the clustering threshold (``models.pipelines.diarize.calibrated_threshold``) unless the
    config's ``--set`` does."""
    try:
        path = existing_checkpoint(checkpoint)
    except FileNotFoundError as exc:
        raise DiarizeJobError(f"--checkpoint: {exc}") from exc
    embedder = SpeakerEmbedder.from_checkpoint(path)
    return path, embedder, eer_threshold(read_calibration(path, embedder.model_id))


# ---------------------------------------------------------------------------------------------
# Diarization


def diarize_file(diarizer: Diarizer, row: Mapping[str, Any], **bounds: Any) -> dict[str, Any]:
    """One input row -> an output row: ``uri, path, error, rttm, result`` (JSON text)."""
    out = {"uri": str(row["uri"]), "path": str(row["path"]), "error": "", "rttm": "", "result": ""}
    try:
        wav, sr = load_audio(str(row["path"]), target_sr=diarizer.embedder.sample_rate)
        res = diarizer(wav, sr, **bounds)
        out["rttm"] = res.to_rttm(out["uri"])
        out["result"] = json.dumps(res.to_json())
    except Exception as exc:  # a bad file is data, not a crash: listed in failures.json
        log.warning("%s: %s: %s", row["path"], type(exc).__name__, exc)
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def diarize_rows(diarizer: Diarizer, rows: list[dict[str, Any]], **bounds: Any) -> list[dict]:
    """:func:`diarize_file` over ``rows``; never raises for a bad file."""
    return [diarize_file(diarizer, r, **bounds) for r in rows]


# ---------------------------------------------------------------------------------------------
# Outputs


def write_outputs(
    rows: Iterable[Mapping[str, Any]],
    output: str | Path,
    references: Mapping[str, list[tuple[float, float, str]]] | None = None,
) -> dict[str, Any]:
    """Write ``rttm/<uri>.rttm``, ``segments/<uri>.json`` and the timeline picture
    ``plots/<uri>.png`` (reference rows above the hypothesis rows when ``references`` has the
    uri; :func:`ray_jobs.plots.timeline_png`) per diarized row and ``failures.json``
    (``[{"uri", "path", "error"}]``, empty list when none); returns a summary with
    ``hypotheses`` ``{uri: [(start, end, speaker)]}`` for scoring."""
    from ray_jobs.plots import timeline_png

    out = Path(output)
    for sub in ("rttm", "segments", "plots"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    failures, hyps, seconds = [], {}, 0.0
    for r in rows:
        if r["error"]:
            failures.append({"uri": r["uri"], "path": r["path"], "error": r["error"]})
            continue
        (out / "rttm" / f"{r['uri']}.rttm").write_text(r["rttm"])
        result = json.loads(r["result"])
        (out / "segments" / f"{r['uri']}.json").write_text(json.dumps(result, indent=2))
        hyps[r["uri"]] = [(s["start"], s["end"], s["speaker"]) for s in result["segments"]]
        ref = None if references is None else references.get(r["uri"])
        timeline_png(hyps[r["uri"]], out / "plots" / f"{r['uri']}.png", reference=ref,
                     duration=float(result["duration"]), title=f"{r['uri']}")  # fmt: skip
        seconds += float(result["duration"])
    failures.sort(key=lambda f: f["uri"])
    (out / "failures.json").write_text(json.dumps(failures, indent=2))
    return {
        "num_diarized": len(hyps),
        "num_failed": len(failures),
        "audio_seconds": seconds,
        "failures": failures,
        "hypotheses": hyps,
    }


def load_references(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """A reference RTTM file, or a folder of ``*.rttm`` files, -> ``{uri: turns}``."""
    p = Path(path)
    files = sorted(p.glob("*.rttm")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise DiarizeJobError(f"--reference-rttm {path}: no RTTM file(s) there")
    refs: dict[str, list[tuple[float, float, str]]] = {}
    for f in files:
        for uri, turns in read_rttm(f).items():
            refs.setdefault(uri, []).extend(turns)
    return refs


def der_report(
    hypotheses: Mapping[str, list[tuple[float, float, str]]],
    references: Mapping[str, list[tuple[float, float, str]]],
    *,
    collar: float = 0.25,
    uem: Mapping[str, list[tuple[float, float]]] | None = None,
) -> dict[str, Any]:
    """Per-file DER of every hypothesis with a reference, and the total over those files.

    Totals are ratios of summed seconds (missed, false alarm, confusion over summed scored
    reference speech). Hypotheses without a reference are listed under ``unscored``;
    references without a hypothesis (failed files) under ``missing``.
    """
    files, sums = [], {"total": 0.0, "missed": 0.0, "false_alarm": 0.0, "confusion": 0.0}
    for uri in sorted(hypotheses):
        if uri not in references:
            continue
        r = diarization_error_rate(
            references[uri],
            hypotheses[uri],
            collar=collar,
            uem=None if uem is None else uem.get(uri),
        )
        files.append(
            {"uri": uri, "der": r.der, "missed": r.missed, "false_alarm": r.false_alarm,
             "confusion": r.confusion, "total_seconds": r.total,
             "missed_seconds": r.missed_seconds, "false_alarm_seconds": r.false_alarm_seconds,
             "confusion_seconds": r.confusion_seconds}
        )  # fmt: skip
        sums["total"] += r.total
        sums["missed"] += r.missed_seconds
        sums["false_alarm"] += r.false_alarm_seconds
        sums["confusion"] += r.confusion_seconds
    t = sums["total"]
    errors = sums["missed"] + sums["false_alarm"] + sums["confusion"]

    def ratio(x: float) -> float:
        return x / t if t > 0 else (0.0 if errors == 0 else 1.0)

    return {
        "collar": collar,
        "files": files,
        "total": {
            "der": ratio(errors), "missed": ratio(sums["missed"]),
            "false_alarm": ratio(sums["false_alarm"]), "confusion": ratio(sums["confusion"]),
            "total_seconds": t, "missed_seconds": sums["missed"],
            "false_alarm_seconds": sums["false_alarm"], "confusion_seconds": sums["confusion"],
            "num_files": len(files),
        },
        "unscored": sorted(set(hypotheses) - set(references)),
        "missing": sorted(set(references) - set(hypotheses)),
    }  # fmt: skip


def format_der_markdown(report: Mapping[str, Any]) -> str:
    """The DER report as a Markdown table (percentages), total row last."""
    lines = [
        f"# Diarization error rate (collar {report['collar']:g} s)",
        "",
        "| file | DER % | missed % | false alarm % | confusion % | scored s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in [*report["files"], {"uri": "**total**", **report["total"]}]:
        lines.append(
            f"| {f['uri']} | {100 * f['der']:.2f} | {100 * f['missed']:.2f} | "
            f"{100 * f['false_alarm']:.2f} | {100 * f['confusion']:.2f} | "
            f"{f['total_seconds']:.1f} |"
        )
    if report["missing"]:
        lines += [
            "",
            f"Not scored (no hypothesis, see failures.json): {', '.join(report['missing'])}",
        ]
    if report["unscored"]:
        lines += ["", f"No reference: {', '.join(report['unscored'])}"]
    return "\n".join(lines) + "\n"


def write_der(
    output: str | Path,
    hypotheses: Mapping[str, list[tuple[float, float, str]]],
    reference_rttm: str | Path,
    *,
    collar: float = 0.25,
    uem_path: str | Path | None = None,
) -> dict[str, Any]:
    """Score against ``reference_rttm`` and write ``der.json`` + ``der.md``; returns the report."""
    refs = load_references(reference_rttm)
    if uem_path is not None and not Path(uem_path).is_file():
        raise DiarizeJobError(f"--uem {uem_path}: no such file")
    uem = read_uem(uem_path) if uem_path is not None else None
    report = der_report(hypotheses, refs, collar=collar, uem=uem)
    out = Path(output)
    (out / "der.json").write_text(json.dumps(report, indent=2))
    (out / "der.md").write_text(format_der_markdown(report))
    return report


__all__ = [
    "ConfigError",
    "DiarizeJobError",
    "der_report",
    "diarization_model",
    "diarize_file",
    "diarize_rows",
    "format_der_markdown",
    "list_inputs",
    "load_references",
    "speaker_bounds",
    "uri_of",
    "write_der",
    "write_outputs",
]

"""RTTM and UEM files: the NIST Rich Transcription formats for speaker turns and scored regions.

RTTM (NIST RT-09 evaluation plan, appendix A; the format md-eval, dscore and pyannote read) has
one space-separated record per line::

    SPEAKER <uri> <channel> <onset s> <duration s> <NA> <NA> <speaker> <NA> <NA>

Only ``SPEAKER`` records are turns; other record types (``SPKR-INFO``, ``LEXEME``...) are
skipped. A UEM line is ``<uri> <channel> <start s> <end s>``. Lines that are blank or start with
``#`` or ``;;`` are comments. Turns come back as ``(start, end, speaker)`` tuples in seconds,
sorted by ``(start, end, speaker)``, which is what ``models.metrics.diarization_error_rate``
takes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Turn = tuple[float, float, str]


class RTTMError(ValueError):
    """A malformed RTTM/UEM line; the message names the line number and what is wrong."""


def _is_comment(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#") or s.startswith(";;")


def _number(tok: str, what: str, lineno: int, source: str) -> float:
    try:
        x = float(tok)
    except ValueError:
        raise RTTMError(f"{source}:{lineno}: {what} {tok!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise RTTMError(f"{source}:{lineno}: {what} must be a finite number >= 0, got {tok!r}")
    return x


def parse_rttm(text: str, source: str = "<rttm>") -> dict[str, list[Turn]]:
    """RTTM text -> ``{uri: [(start, end, speaker), ...]}`` (sorted). Raises ``RTTMError``."""
    out: dict[str, list[Turn]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if _is_comment(line):
            continue
        tok = line.split()
        if tok[0] != "SPEAKER":
            continue
        if len(tok) < 8:
            raise RTTMError(
                f"{source}:{lineno}: a SPEAKER record needs at least 8 fields "
                f"(SPEAKER uri channel onset duration <NA> <NA> speaker ...), got {len(tok)}"
            )
        onset = _number(tok[3], "onset", lineno, source)
        duration = _number(tok[4], "duration", lineno, source)
        out.setdefault(tok[1], []).append((onset, onset + duration, tok[7]))
    return {uri: sorted(turns) for uri, turns in out.items()}


def read_rttm(path: str | os.PathLike) -> dict[str, list[Turn]]:
    """Read an RTTM file -> ``{uri: [(start, end, speaker), ...]}`` sorted by start."""
    path = Path(path)
    return parse_rttm(path.read_text(encoding="utf-8"), source=str(path))


def _turn_fields(seg: Any) -> Turn:
    if hasattr(seg, "speaker"):  # models.pipelines.diarize.Segment
        return float(seg.start), float(seg.end), str(seg.speaker)
    start, end, spk = seg
    return float(start), float(end), str(spk)


def format_rttm(uri: str, segments: Iterable[Any]) -> str:
    """RTTM text for one file; ``segments`` are ``(start, end, speaker)`` or ``Segment``s."""
    if not uri or any(c.isspace() for c in uri):
        raise ValueError(f"RTTM uri must be non-empty without whitespace, got {uri!r}")
    lines = []
    for start, end, spk in sorted(_turn_fields(s) for s in segments):
        if end < start:
            raise ValueError(f"segment ({start}, {end}, {spk}) ends before it starts")
        if not spk or any(c.isspace() for c in spk):
            raise ValueError(f"RTTM speaker labels cannot contain whitespace, got {spk!r}")
        lines.append(f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {spk} <NA> <NA>\n")
    return "".join(lines)


def write_rttm(path: str | os.PathLike, uri: str, segments: Iterable[Any]) -> Path:
    """Write one file's turns as RTTM (millisecond precision); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_rttm(uri, segments), encoding="utf-8")
    return path


def parse_uem(text: str, source: str = "<uem>") -> dict[str, list[tuple[float, float]]]:
    """UEM text -> ``{uri: [(start, end), ...]}`` sorted. Raises ``RTTMError``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if _is_comment(line):
            continue
        tok = line.split()
        if len(tok) != 4:
            raise RTTMError(
                f"{source}:{lineno}: a UEM line is 'uri channel start end' (4 fields), "
                f"got {len(tok)}"
            )
        start = _number(tok[2], "start", lineno, source)
        end = _number(tok[3], "end", lineno, source)
        if end < start:
            raise RTTMError(f"{source}:{lineno}: end {end} is before start {start}")
        out.setdefault(tok[0], []).append((start, end))
    return {uri: sorted(r) for uri, r in out.items()}


def read_uem(path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Read a UEM file -> ``{uri: [(start, end), ...]}``."""
    path = Path(path)
    return parse_uem(path.read_text(encoding="utf-8"), source=str(path))

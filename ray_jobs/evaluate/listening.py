"""Listening pages (Ray-free): one HTML page per evaluation, to hear and see what a model does.

For each clip the page has a row of ``<audio>`` players (original, processed, baselines), the
spectrograms of those signals (``ray_jobs.plots.spectrogram_png``: time in s, frequency in kHz,
a dB colour bar) and a table of the clip's metrics per signal. The WAV files and PNGs are written
beside the page and linked by relative paths, so the folder can be copied, zipped or served as
it is (``python -m http.server``). The codec evaluation (``ray_jobs/evaluate/codec.py``:
original, ours, Opus, Lyra) and the TSE evaluation (``ray_jobs/evaluate/tse.py``: mixture,
extracted, clean target, enrollment) write one.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PAGE = "index.html"


@dataclass(frozen=True)
class ListeningClip:
    """One clip of a page: ``signals`` ``{label: (T,) float32}`` at ``sample_rate`` Hz, in the
    order they are shown (the first is the reference the others are heard against); ``metrics``
    ``{label: {metric: value}}`` (a label may have none); ``note``: one line of context."""

    name: str
    sample_rate: int
    signals: Mapping[str, np.ndarray]
    metrics: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    note: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "clip"


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def write_listening_page(
    out_dir: str | Path,
    title: str,
    clips: Sequence[ListeningClip],
    *,
    summary_html: str = "",
    units: Mapping[str, str] | None = None,
) -> Path:
    """Write ``out_dir/index.html`` with ``audio/<clip>__<signal>.wav`` (16-bit PCM) and
    ``spectrograms/<clip>.png`` beside it; returns the page's path. ``summary_html`` (already
    HTML) goes above the clips; ``units`` ``{metric: unit}`` labels the metric columns."""
    import soundfile as sf

    from ray_jobs.plots import spectrogram_png

    if not clips:
        raise ValueError("a listening page needs at least one clip")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    units = dict(units or {})
    body = [f"<h1>{html.escape(title)}</h1>", summary_html]
    for i, clip in enumerate(clips):
        slug = f"{i:02d}_{_slug(Path(clip.name).stem)}"
        players = []
        for label, wav in clip.signals.items():
            rel = f"audio/{slug}__{_slug(label)}.wav"
            x = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
            sf.write(out / rel, x, clip.sample_rate, subtype="PCM_16")
            players.append(
                f"<figure><figcaption>{html.escape(label)}</figcaption>"
                f'<audio controls preload="none" src="{rel}"></audio></figure>'
            )
        png = spectrogram_png(clip.signals, clip.sample_rate, out / "spectrograms" / f"{slug}.png",
                              title=clip.name)  # fmt: skip
        keys: list[str] = []
        for m in clip.metrics.values():
            keys += [k for k in m if k not in keys]
        table = ""
        if keys:
            head = "".join(
                f"<th>{html.escape(k)}{' (' + html.escape(units[k]) + ')' if k in units else ''}"
                "</th>"
                for k in keys
            )
            rows = "".join(
                f"<tr><th>{html.escape(label)}</th>"
                + "".join(f"<td>{_cell(clip.metrics[label].get(k))}</td>" for k in keys)
                + "</tr>"
                for label in clip.signals
                if label in clip.metrics
            )
            table = f"<table><tr><th>signal</th>{head}</tr>{rows}</table>"
        body.append(
            f'<section id="{slug}"><h2>{html.escape(clip.name)}</h2>'
            + (f"<p>{html.escape(clip.note)}</p>" if clip.note else "")
            + f'<div class="players">{"".join(players)}</div>{table}'
            + f'<img src="spectrograms/{png.name}" alt="spectrograms of {html.escape(clip.name)}">'
            + "</section>"
        )
    page = out / PAGE
    page.write_text(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
        ".players{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}"
        "figcaption{font-weight:bold}img{max-width:100%}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:right}section{border-top:1px solid #999;margin-top:1.5em}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n",
        encoding="utf-8",
    )
    return page

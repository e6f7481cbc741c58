"""BENCHMARKS.md sections on speaker embedding models: the preset table, the fbank front end and
the 3D-Speaker reference comparison.

They render the rows that ``ray_jobs.bench.models`` measures (and, for the comparison,
``ray_jobs.compare_reference``); ``ray_jobs.bench.report`` assembles the document. Ray-free.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ray_jobs.bench.models import FbankRow, Settings, SpeakerRow, fmt, head_rule

log = logging.getLogger("ray_jobs.bench.report")


def section_speaker(rows: list[SpeakerRow], settings: Settings) -> str:
    dev = "CPU" if settings.device.type == "cpu" else "GPU"
    head = (
        f"| preset | model | params (M) | GFLOP per s audio (1-s input) "
        f"| GFLOP per s audio (3-s input) | {dev} ms/utt b1 | {dev} ms/utt b16 "
        f"| {dev} ms total b16 | b16 speed-up | fbank / fwd b1 | runs |"
    )
    lines = [
        "## Speaker embedding models",
        "",
        f"One {settings.seconds:g}-s utterance = {rows[0].frames if rows else '?'} fbank frames. "
        "`b16 speed-up` = (ms/utt at batch 1) / (ms/utt at batch 16); `fbank / fwd b1` = fbank "
        "time for one utterance / batch-1 forward time (both per-round medians).",
        "",
        head,
        head_rule(head),
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.model_name} | {fmt(r.params_m)} | {fmt(r.gflops_per_s_1s)} "
            f"| {fmt(r.gflops_per_s_3s)} | {fmt(r.b1_ms)} | {fmt(r.b16_ms_per_utt)} "
            f"| {fmt(r.b16_ms_total)} | {fmt(r.b16_speedup)} | {fmt(r.fbank_ratio)} "
            f"| {r.repeats} |"
        )
    return "\n".join(lines)


def section_fbank(fb: FbankRow, speaker_rows: list[SpeakerRow], settings: Settings) -> str:
    dev = "CPU" if settings.device.type == "cpu" else "GPU"
    lines = [
        "## Fbank front end",
        "",
        f"`models.features.Fbank` (torchaudio Kaldi fbank; it loops over the rows of a batch), "
        f"{settings.seconds:g}-s utterance:",
        "",
        f"| {dev} ms/utt b1 | {dev} ms/utt b16 | runs |",
        "|---|---|---|",
        f"| {fmt(fb.b1_ms)} | {fmt(fb.b16_ms_per_utt)} | {fb.repeats} |",
    ]
    ratios = [(r.fbank_ratio, r.preset) for r in speaker_rows if math.isfinite(r.fbank_ratio)]
    if ratios:
        lo, hi = min(ratios), max(ratios)
        lines += [
            "",
            f"Share relative to a batch-1 model forward (measured side by side, column "
            f"`fbank / fwd b1` above): from {fmt(100 * lo[0])} % of the forward ({lo[1]}) to "
            f"{fmt(100 * hi[0])} % ({hi[1]}).",
        ]
        heavy = [p for ratio, p in ratios if ratio >= 0.25]
        if heavy:
            lines[-1] += (
                f" For {', '.join(heavy)} the fbank costs at least a quarter of the forward: "
                "compute it on CPU data workers (Ray Data) rather than in the GPU/Serve replica."
            )
    return "\n".join(lines)


def section_reference(
    reference_root: Path | None, settings: Settings, notes: list[str] | None = None
) -> str | None:
    """The 3D-Speaker comparison from ``ray_jobs.compare_reference``, or None with a note."""
    notes = notes if notes is not None else []
    if reference_root is None and importlib.util.find_spec("speakerlab") is None:
        notes.append(
            "3D-Speaker reference comparison: speakerlab is not installed (`uv sync` installs "
            "the dev group) and no `--reference-root` checkout was given."
        )
        return None
    try:
        import ray_jobs.compare_reference.core as cr
    except ModuleNotFoundError as exc:
        if exc.name != "ray_jobs.compare_reference.core":
            raise
        notes.append("3D-Speaker reference comparison: `ray_jobs/compare_reference/` is absent.")
        return None
    json_path = cr.default_json_path()
    if not json_path.is_file():
        notes.append(f"3D-Speaker reference comparison: {json_path} not found.")
        return None
    specs = json.loads(json_path.read_text())
    repeats = 3 if settings.quick else 7
    results: list[dict[str, Any]] = []
    for entry, spec in specs.items():
        log.info("reference comparison: %s", entry)
        try:
            res = cr.compare_entry(entry, spec, reference_root, repeats, 0)
        except Exception as exc:  # one broken entry must not lose the others
            log.warning("reference comparison of %s failed: %s", entry, exc)
            res = {"entry": entry, "status": f"failed: {type(exc).__name__}: {exc}"}
        results.append(res)
    return "\n".join(
        [
            "## 3D-Speaker reference comparison",
            "",
            "`ray_jobs.compare_reference` against "
            + (f"the checkout at `{reference_root}`" if reference_root else "speakerlab (PyPI)")
            + ": reference "
            "weights (randomised, BatchNorm statistics included) loaded into our "
            "`3dspeaker/<entry>` preset with `strict=True`; max abs difference of the raw "
            f"embeddings on the same fbank input; {torch.get_num_threads()} threads, "
            f"{repeats} interleaved runs (median). Ratio = ours / reference (< 1: we are faster).",
            "",
            cr.markdown(results),
        ]
    )

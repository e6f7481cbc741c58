"""``python -m ray_jobs.bench --quick`` writes a complete BENCHMARKS.md; optional sections degrade
to notes; the interleaved timer gives every compared call the same rounds."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from models.registry import get_entry, get_preset, list_presets
from ray_jobs.bench import cli, ingest, report, speaker
from ray_jobs.bench.models import Settings, fmt, interleaved


def _tiny_speaker_presets() -> list[str]:
    return [
        p
        for p in list_presets()
        if p.endswith("-tiny") and get_entry(get_preset(p).model_name).family == "speaker"
    ]


def _table(doc: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and data rows of the first Markdown table under ``heading``."""
    section = doc.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    assert len(rows) >= 2 and set(rows[1][0]) == {"-"}, f"no table under {heading!r}"
    return rows[0], rows[2:]


def _positive_finite(cell: str) -> bool:
    value = float(cell)
    return math.isfinite(value) and value > 0


def test_quick_run_writes_every_tiny_speaker_preset(tmp_path):
    tiny = _tiny_speaker_presets()
    assert tiny, "no -tiny speaker preset registered"
    out = tmp_path / "BENCHMARKS.md"
    argv = ["--quick", "--no-ray-data", "--families", "speaker", "--output", str(out)]
    assert cli.main(argv) == 0
    doc = out.read_text()

    assert "## How it was measured" in doc
    method = doc.split("## How it was measured", 1)[1].split("\n## ", 1)[0]
    assert report.cpu_model() in method
    assert f"torch: {torch.__version__}" in method
    assert "median" in method and "interleaved" in method and "set_num_threads(2)" in method

    header, rows = _table(doc, "## Speaker embedding models")
    by_preset = {r[0]: r for r in rows}
    assert set(tiny) <= set(by_preset), f"missing rows: {set(tiny) - set(by_preset)}"
    assert not [p for p in by_preset if not p.endswith("-tiny")], "quick mode measures only -tiny"
    for preset in tiny:
        row = by_preset[preset]
        assert len(row) == len(header)
        cells = dict(zip(header, row, strict=True))
        numbers = row[2:]  # preset and model name first, then only numbers
        assert all(_positive_finite(c) for c in numbers), (preset, cells)
        per_utt, total = float(cells["CPU ms/utt b16"]), float(cells["CPU ms total b16"])
        assert total == pytest.approx(16 * per_utt, rel=0.02)

    _, fbank_rows = _table(doc, "## Fbank front end")
    assert fbank_rows and all(_positive_finite(c) for c in fbank_rows[0])


@pytest.mark.ray
def test_ray_data_section_measures_the_real_pipeline(ray_cluster):
    notes: list[str] = []
    text = ingest.section_ray_data(quick=True, notes=notes)
    assert text is not None and "## Ray Data ingest" in text
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| fbank") or line.startswith("| noise")
    ]
    assert rows, text
    for row in rows:
        rate = float(row.split("|")[2])
        assert rate > 0


def test_reference_section_is_omitted_with_a_note(monkeypatch, tmp_path):
    settings = Settings.make(quick=True, threads=2, device=torch.device("cpu"))
    notes: list[str] = []
    # speakerlab (the installed reference) absent and no checkout given
    monkeypatch.setitem(sys.modules, "speakerlab", None)
    assert speaker.section_reference(None, settings, notes) is None
    assert "--reference-root" in notes[-1] and "speakerlab" in notes[-1]
    # The comparison module missing (another engineer's file) must not break the benchmark.
    monkeypatch.setitem(sys.modules, "ray_jobs.compare_reference.core", None)
    assert speaker.section_reference(tmp_path, settings, notes) is None
    assert "compare_reference/" in notes[-1]


def test_interleaved_gives_every_call_the_same_rounds():
    order: list[str] = []
    settings = Settings(
        quick=True, threads=2, device=torch.device("cpu"), warmup=1, min_repeats=4, max_repeats=6
    )
    times = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, settings)
    assert len(times["a"]) == len(times["b"]) and 4 <= len(times["a"]) <= 6
    assert all(t >= 0 for t in times["a"] + times["b"])
    timed = order[2:]  # after one warm-up round
    firsts = {timed[i] for i in range(0, len(timed), 2)}
    assert firsts == {"a", "b"}, "the order within a round must rotate"


@pytest.mark.parametrize("x", [0.000123, 0.5, 3.14159, 42.42, 1234.5])
def test_fmt_is_parsable_with_three_significant_digits(x):
    assert float(fmt(x)) == pytest.approx(x, rel=0.01)


@pytest.mark.slow
@pytest.mark.realdata
def test_quick_run_of_the_product_sections(tmp_path, real_data):
    """Diarization, TSE and codec sections in --quick mode: each writes its tables with numbers."""
    out = tmp_path / "BENCHMARKS.md"
    argv = ["--quick", "--no-ray-data", "--families", "diarization,tse,codec", "--output", str(out)]
    assert cli.main(argv) == 0
    doc = out.read_text()
    for title in ("## Diarization", "## Target speaker extraction", "## Codec"):
        assert title in doc, title
        body = doc.split(title, 1)[1].split("\n## ", 1)[0]
        assert "|---" in body, f"{title}: no table"
    assert "## Speaker embedding models" not in doc

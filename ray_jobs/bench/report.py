"""``make bench``: measure every registered speaker preset and write BENCHMARKS.md.

Per speaker preset (from ``models.registry.list_presets()``; ``-tiny`` presets only with
``--quick``, which measures nothing else so that it finishes in well under a minute): parameters,
GFLOPs per second of audio (``torch.utils.flop_counter.FlopCounterMode`` on 1 s and 3 s of fbank
input), milliseconds per 3-s utterance at batch 1 and batch 16, and the cost of the Kaldi fbank
front end (``models.features.Fbank``) next to a forward. Optional sections: the 3D-Speaker
reference comparison (``ray_jobs.compare_reference``, with ``--reference-root``), Ray Data
ingest throughput (``datasets.ray_data.benchmark_throughput``), the speaker service's requests/s
and latency over HTTP (``serve.bench.benchmark_service``) and its open-set /identify accuracy on
real speakers (``serve.bench.benchmark_identification``); each is omitted with a note when its
code or inputs are absent.

Timing follows the usual micro-benchmark practice (cf. ``torch.utils.benchmark``): warm-up runs
first, then the median of repeated runs; things that are compared (fbank, batch 1, batch 16) run
interleaved in the same rounds, so their ratios are measured side by side. Model measurement is
in ``ray_jobs.bench.models``; the sections live beside it (``speaker``: model table, fbank,
reference comparison; ``ingest``: Ray Data and bulk extraction; ``service``: the speaker service;
``diarize``, ``tse``, ``codec``: the other families). This file measures the machine and
assembles the document; the CLI is ``ray_jobs/bench/cli.py``. No Ray here except through the
ingest and service sections.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ray_jobs.bench.ingest import section_extraction, section_ray_data
from ray_jobs.bench.models import (
    Settings,
    SpeakerRow,
    fbank_row,
    speaker_row,
    speaker_targets,
    warm_up_runtime,
)
from ray_jobs.bench.service import section_identification, section_service
from ray_jobs.bench.speaker import section_fbank, section_reference, section_speaker

log = logging.getLogger(__name__)

# reference-budget: speakerlab's trainer and ours for the same minutes on the same data
# (ray_jobs/bench/reference_budget.py); alone: --families reference-budget --no-ray-data --no-service
SUPPORTED_FAMILIES = ("speaker", "diarization", "tse", "codec", "reference-budget")


# --- machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device) -> dict[str, str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    info = {
        "CPU": cpu_model(),
        "CPU cores (logical, usable by this process)": f"{os.cpu_count()}, {usable}",
        "torch intra-op threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "Python": platform.python_version(),
        "OS": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        # Other work on the machine is the main source of noise; say how busy it was.
        info["load average (1/5/15 min) at start"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return info


# --- sections -----------------------------------------------------------------------------------


def section_method(info: dict[str, str], settings: Settings, argv: Sequence[str]) -> str:
    dev = settings.device.type.upper()
    lines = [
        "## How it was measured",
        "",
        f"Command: `python -m ray_jobs.bench {' '.join(argv)}`".rstrip() + " "
        f"({'quick' if settings.quick else 'full'} mode), "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "Machine:",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "Method:",
        "",
        f"- `torch.set_num_threads({settings.threads})`; models in eval mode under "
        "`torch.inference_mode()`, float32.",
        f"- Input: {settings.seconds:g} s of 16 kHz noise -> `models.features.Fbank` (80-bin "
        "Kaldi fbank, 25 ms / 10 ms, CMN) -> the model. Batch 16 is 16 such utterances.",
        f"- Each measured call gets {settings.warmup} warm-up run(s), then the **median** of N "
        f"timed runs (N between {settings.min_repeats} and {settings.max_repeats}, sized to about "
        f"{settings.budget_s:g} s per model; the `runs` column gives N). Timers are "
        "`time.perf_counter`"
        + (" with `torch.cuda.synchronize()` around each call" if dev == "CUDA" else "")
        + ".",
        "- Things that are compared are timed **interleaved**: each round runs fbank (one "
        "utterance), the batch-1 forward and the batch-16 forward, rotating their order, so "
        "the ratios (`b16 speed-up`, `fbank / fwd`) are medians of per-round ratios measured "
        "side by side.",
        "- These machines are shared and noisy: the **ratios are the primary figures**; absolute "
        + (
            "CPU times are indicative only (expect +-20 % between runs)."
            if dev == "CPU"
            else "times are from the GPU machine named above."
        )
        + " Absolute GPU times are reported only from runs on a GPU machine (`--device cuda`).",
        "- GFLOPs: `torch.utils.flop_counter.FlopCounterMode` (counts matmul/convolution/attention "
        "as 2 x multiply-accumulates; elementwise ops, norms and pooling are not counted) on one "
        "1-s and one 3-s fbank input, divided by the audio duration. The two columns differ only "
        "where a model has a length-independent part (e.g. the pooling/embedding layers).",
        "- Parameters: all `nn.Parameter`s of the embedding model (no margin head).",
    ]
    return "\n".join(lines)


# --- document -----------------------------------------------------------------------------------


def run(
    output: Path,
    *,
    quick: bool = False,
    families: Sequence[str] = SUPPORTED_FAMILIES,
    reference_root: Path | None = None,
    threads: int = 2,
    device: str = "cpu",
    ray_data: bool = True,
    service: bool = True,
    diarization_checkpoint: Path | None = None,
    identification_checkpoint: Path | None = None,
    argv: Sequence[str] = (),
) -> Path:
    """Measure, write ``output`` (Markdown) and return its path."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    settings = Settings.make(quick=quick, threads=threads, device=torch.device(device))
    notes: list[str] = []
    unknown = [f for f in families if f not in SUPPORTED_FAMILIES]
    for fam in unknown:
        notes.append(
            f"family `{fam}`: no benchmark yet (supported: {', '.join(SUPPORTED_FAMILIES)})."
        )
    sections = [section_method(machine_info(settings.device), settings, argv)]

    warm_up_runtime(settings.device)
    speaker_rows: list[SpeakerRow] = []
    if "speaker" in families:
        targets = speaker_targets(quick)
        if not targets:
            notes.append("speaker family: no presets registered.")
        for name in targets:
            log.info("speaker: %s", name)
            speaker_rows.append(speaker_row(name, settings))
        if speaker_rows:
            sections.append(section_speaker(speaker_rows, settings))
        log.info("fbank")
        sections.append(section_fbank(fbank_row(settings), speaker_rows, settings))

    # The other products: each section module measures side by side within its own run.
    if "diarization" in families:
        from ray_jobs.bench.diarize import diarization_section

        log.info("diarization")
        sections.append(diarization_section(diarization_checkpoint, quick))
    if "tse" in families:
        from ray_jobs.bench.tse import tse_section

        log.info("target speaker extraction")
        sections.append(tse_section(quick))
    if "codec" in families:
        from ray_jobs.bench.codec import codec_section

        log.info("codecs and classifiers")
        sections.append(codec_section(quick))

    if "reference-budget" in families:
        from ray_jobs.bench.reference_budget import section_reference_budget

        log.info("same budget as speakerlab's trainer")
        text = section_reference_budget(quick, notes)
        if text:
            sections.append(text)

    if quick:
        notes.append(
            "3D-Speaker reference comparison, Ray Data ingest and the speaker service: skipped in "
            "--quick mode."
        )
    elif "speaker" in families:
        ref = section_reference(reference_root, settings, notes)
        if ref:
            sections.append(ref)
        # (wanted, section, the note when not wanted): a section returns None with a note of
        # its own when its code or inputs are absent.
        optional = (
            (ray_data, section_ray_data, "Ray Data ingest throughput: skipped (--no-ray-data)."),
            (ray_data, section_extraction, None),
            (service, section_service, "Speaker service: skipped (--no-service)."),
            (
                service,
                lambda q, n: section_identification(q, n, identification_checkpoint),
                None,
            ),
        )
        for wanted, section, skipped in optional:
            if wanted:
                text = section(quick, notes)
                if text:
                    sections.append(text)
            elif skipped:
                notes.append(skipped)

    elapsed = time.perf_counter() - started
    load = f", load average at end {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    sections[0] += f"\n- This run took {elapsed / 60:.1f} min{load}."
    if notes:
        sections.append("## Not measured in this run\n\n" + "\n".join(f"- {n}" for n in notes))
    doc = "# Benchmarks\n\nGenerated by `make bench` (`python -m ray_jobs.bench`); do not edit by hand.\n\n"
    doc += "\n\n".join(sections) + "\n"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(doc)
    log.info("wrote %s", output.resolve())
    return output

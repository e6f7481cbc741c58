"""Target speaker extraction section of ``BENCHMARKS.md``: data, model and long-file costs.

Three questions the TSE training and serving plans depend on:

1. **Dynamic mixing on CPU.** Mixtures per second per CPU core for 4-s 48-kHz mixtures with three
   interferers, a room impulse response per source and noise (``datasets.mixing.DynamicMixer``,
   the recipe of ``ray_jobs/train/data/tse.py``; speech = LibriSpeech train-clean-100 from the shared
   real data, upsampled to 48 kHz; RIR and noise banks from the same folder), timed by
   ``benchmark_mixing`` on process CPU time (one core; a loaded machine inflates CPU time less
   than wall time). From it, the CPU cores that keep one GPU fed: ``R / per-core rate`` for a GPU
   that trains ``R`` samples/s (``R`` is measured on a GPU and passed in, or left a symbol).
2. **Model real-time factor on CPU** of ``tse-v1`` / ``tse-v2`` (random weights: the cost of a
   forward does not depend on them) for one 4-s 48-kHz chunk, at 1 and 2 intra-op threads, and
   the ratios between them (which transfer to other CPUs better than the absolute times, which
   are this machine's).
3. **Chunked long-file extraction vs one pass** (``TargetExtractor``: 4-s chunks, 1-s
   cross-fade, reference encoded once) on a longer mixture: time and peak cost of the one-pass
   alternative, whose full-band self-attention grows with the square of the length.

``tse_section(quick)`` returns the Markdown; ``ray_jobs/bench/report.py`` appends it.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from datasets.audio import load_audio
from datasets.banks import open_bank
from datasets.mixing import DynamicMixer, benchmark_mixing
from datasets.mixing_config import MixConfig
from datasets.ray_env import REPO_ROOT
from datasets.speech_pools import MemoryPool
from models import build_model
from models.metrics import si_sdr
from models.pipelines.tse import TargetExtractor

log = logging.getLogger("ray_jobs.bench.report")

SHARED = Path(os.environ.get("VOXRAY_REAL_DATA", REPO_ROOT.parent / "shared" / "data"))
LIBRISPEECH = Path("speech") / "librispeech-train-clean-100"
SR = 48000
SEGMENT_S = 4.0


def mixing_rate(root: Path, speakers: int, n: int, seed: int = 0) -> dict:
    """``benchmark_mixing`` over ``speakers`` LibriSpeech speakers at 48 kHz, 3 interferers."""
    files = sorted((root / LIBRISPEECH).glob("*.flac"))[:speakers]
    if len(files) < 4:
        raise FileNotFoundError(f"need >= 4 LibriSpeech files under {root / LIBRISPEECH}")
    pool = MemoryPool({f.name.split("-")[0]: [load_audio(f, SR)[0]] for f in files}, SR)
    cfg = MixConfig(
        sample_rate=SR,
        segment_seconds=SEGMENT_S,
        min_interferers=3,
        max_interferers=3,
        rir_prob=1.0,
        target_absent_prob=0.0,
    )
    mixer = DynamicMixer(cfg, pool, open_bank(root / "noise", SR), open_bank(root / "rir", SR))
    return benchmark_mixing(mixer, n, seed=seed)


def _time(fn, reps: int) -> float:
    fn()  # warm-up: allocator, kernels, first-touch
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_rtf(name: str, threads: int, reps: int) -> float:
    """Seconds per second of audio for one 4-s 48-kHz chunk through ``name`` on CPU."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.randn(1, int(SEGMENT_S * SR)) * 0.1
    r = torch.randn(1, int(SEGMENT_S * SR)) * 0.1
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _time(lambda: model(x, r), reps) / SEGMENT_S
    finally:
        torch.set_num_threads(old)


def chunked_vs_single(name: str, seconds: float, reps: int) -> dict:
    """Extraction time of a ``seconds`` mixture: 4-s chunks (1-s overlap) vs one pass."""
    torch.manual_seed(0)
    ex = TargetExtractor(build_model(name), batch_size=1)
    rng = np.random.default_rng(0)
    mix = (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    ref = (0.1 * rng.standard_normal(int(SEGMENT_S * SR))).astype(np.float32)
    out: dict = {}
    results = {}
    for label, chunk, overlap in (("chunked", SEGMENT_S, 1.0), ("single", seconds, 0.0)):

        def run(c: float = chunk, o: float = overlap, k: str = label) -> None:
            results[k] = ex(mix, SR, ref, SR, chunk_seconds=c, overlap_seconds=o)

        out[f"{label}_s"] = _time(run, reps)
    out["agreement_db"] = si_sdr(results["chunked"], results["single"])
    return out


def tse_section(quick: bool, gpu_samples_per_s: float | None = None) -> str:
    """The Markdown section. ``gpu_samples_per_s``: a GPU's measured training rate for the
    ``tse-v1`` recipe (4-s samples/s); ``None`` leaves it a symbol ``R``."""
    reps = 1 if quick else 3
    load = os.getloadavg()
    lines = [
        "## Target speaker extraction",
        "",
        f"Load average at start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) "
        f"on {os.cpu_count()} logical CPUs; other jobs share this machine, so absolute times are "
        "this machine's under that load; ratios travel better.",
        "",
    ]
    if (SHARED / LIBRISPEECH).is_dir():
        m = mixing_rate(SHARED, speakers=16 if quick else 64, n=10 if quick else 60)
        rate = m["cpu_mixes_per_s"]
        st = m["stage_ms"]
        lines += [
            "### Dynamic mixing (per CPU core)",
            "",
            f"4-s 48-kHz mixtures, 3 interferers, a RIR per source, noise; {m['n']} mixtures "
            "of LibriSpeech (upsampled to 48 kHz) with the shared RIR and noise banks.",
            "",
            "| mixes/s per core (CPU time) | mixes/s (wall) | ms/mix | read+speed ms | reverb ms "
            "| other ms |",
            "|---|---|---|---|---|---|",
            f"| {rate:.1f} | {m['mixes_per_s']:.1f} | {m['ms_per_mix']:.0f} "
            f"| {st.get('speed+read', 0.0):.0f} | {st.get('reverb', 0.0):.0f} "
            f"| {st['other']:.0f} |",
            "",
        ]
        if gpu_samples_per_s:
            lines.append(
                f"One GPU training at R = {gpu_samples_per_s:.0f} samples/s (measured) needs "
                f"{gpu_samples_per_s / rate:.1f} CPU cores of mixing."
            )
        else:
            lines.append(
                f"CPU cores one GPU needs = R / {rate:.1f}, R = the GPU's training samples/s "
                f"(not measured here); e.g. R = 100 -> {100 / rate:.1f} cores, "
                f"R = 200 -> {200 / rate:.1f} cores."
            )
        lines.append("")
    else:
        lines += [f"Mixing: skipped, no LibriSpeech under {SHARED / LIBRISPEECH}.", ""]
    rows = ["| model | RTF 1 thread | RTF 2 threads | 1t / 2t speed-up |", "|---|---|---|---|"]
    rtf = {}
    for name in ("tse-v1", "tse-v2"):
        one, two = model_rtf(name, 1, reps), model_rtf(name, 2, reps)
        rtf[name] = one
        rows.append(f"| {name} | {one:.2f} | {two:.2f} | {one / two:.2f}x |")
    lines += [
        "### Model real-time factor on CPU (this machine)",
        "",
        "One 4-s 48-kHz chunk plus a 4-s reference (the whole ``forward``), median of "
        f"{reps} after a warm-up; RTF = seconds per second of audio (below 1 = faster than "
        "real time).",
        "",
        *rows,
        "",
        f"tse-v2 / tse-v1 time at 1 thread: {rtf['tse-v2'] / rtf['tse-v1']:.2f}x.",
        "",
    ]
    seconds = 12.0 if quick else 30.0
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        c = chunked_vs_single("tse-v1", seconds, 1)
    finally:
        torch.set_num_threads(old)
    lines += [
        "### Long-file extraction: chunked vs one pass (tse-v1, 1 thread, this machine)",
        "",
        f"A {seconds:.0f}-s mixture; chunked = 4-s chunks with a 1-s cross-fade, reference "
        "encoded once.",
        "",
        "| mode | seconds | RTF |",
        "|---|---|---|",
        f"| chunked (4 s / 1 s) | {c['chunked_s']:.1f} | {c['chunked_s'] / seconds:.2f} |",
        f"| one pass | {c['single_s']:.1f} | {c['single_s'] / seconds:.2f} |",
        "",
        f"Chunked vs one-pass outputs agree to {c['agreement_db']:.1f} dB SI-SDR (random "
        "weights); chunking costs the overlap (4/3 of the audio goes through the model) but "
        "keeps memory and the attention cost per chunk fixed, whatever the file length.",
        "",
    ]
    return "\n".join(lines)

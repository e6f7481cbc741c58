"""Diarization benchmark section of ``BENCHMARKS.md``: real-time factor on this CPU.

Times ``models.pipelines.diarize.Diarizer`` (Silero VAD -> window embeddings -> clustering ->
assembly; the pipeline ``ray_jobs.diarize`` and ``POST /diarize`` run) on two inputs from the
shared real data: the 30 s pyannote sample, and a long recording built by concatenating
LibriSpeech train-clean-100 files with short (0.3-0.8 s) silences (10 min; 2 min with
``quick``). Each stage time is the median over repeated runs after one warm-up run (model and
ONNX session loading are not timed). Without a checkpoint an untrained ``ecapa_tdnn-tiny`` of
the realdata-test size (40 mel bins) is used: the cost of a forward does not depend on the
weights, only the number of speakers found (hence clustering time) may differ a little.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from datasets.ray_env import REPO_ROOT
from models.pipelines.diarize import Diarizer
from models.pipelines.speaker import SpeakerEmbedder

log = logging.getLogger("ray_jobs.bench.report")

SHARED = REPO_ROOT.parent / "shared" / "data"
SAMPLE = Path("diarization") / "pyannote-sample" / "sample.wav"
LIBRISPEECH = Path("speech") / "librispeech-train-clean-100"
SR = 16000


def long_recording(root: Path, seconds: float, seed: int = 0) -> np.ndarray:
    """LibriSpeech files (sorted, cycled) joined with 0.3-0.8 s silences, cut to ``seconds``."""
    rng = np.random.default_rng(seed)
    files = sorted((root / LIBRISPEECH).glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no LibriSpeech files under {root / LIBRISPEECH}")
    parts, n, i = [], 0, 0
    while n < seconds * SR:
        wav, sr = sf.read(files[i % len(files)], dtype="float32")
        if sr != SR:
            raise ValueError(f"{files[i % len(files)]} is {sr} Hz, expected {SR}")
        gap = np.zeros(int(rng.uniform(0.3, 0.8) * SR), np.float32)
        parts += [wav, gap]
        n += wav.size + gap.size
        i += 1
    return np.concatenate(parts)[: int(seconds * SR)]


def time_pipeline(diarizer: Diarizer, wav: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per stage and in total over ``repeats`` runs (after one warm-up)."""
    diarizer(wav[: 10 * SR], SR)  # warm-up: loads the VAD session, first-call allocations
    runs: dict[str, list[float]] = {"vad": [], "embedding": [], "clustering": [], "total": []}
    speakers = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = diarizer(wav, SR)
        runs["total"].append(time.perf_counter() - t0)
        for k in ("vad", "embedding", "clustering"):
            runs[k].append(res.timings[k])
        speakers = res.num_speakers
    out = {k: statistics.median(v) for k, v in runs.items()}
    out["duration"] = wav.size / SR
    out["speakers"] = float(speakers)
    return out


def diarization_section(checkpoint: str | Path | None, quick: bool) -> str:
    """Markdown section: RTF and stage split of diarization on the shared sample and long file."""
    if not (SHARED / SAMPLE).is_file():
        return "## Diarization\n\nSkipped: the shared real data (`../shared/data`) is absent.\n"
    repeats = 1 if quick else 3
    long_seconds = 120.0 if quick else 600.0
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            import models

            torch.manual_seed(0)
            model = models.build_model("ecapa_tdnn-tiny", {"feat_dim": 40}).eval()
            checkpoint = models.save_checkpoint(model, Path(tmp) / "ecapa_tiny.pt")
            what = (
                "untrained `ecapa_tdnn-tiny` (40 mel bins, the realdata-test size; timing does "
                "not depend on training)"
            )
        else:
            what = f"checkpoint `{Path(checkpoint).name}`"
        embedder = SpeakerEmbedder.from_checkpoint(checkpoint)
    diarizer = Diarizer(embedder)
    sample, sr = sf.read(SHARED / SAMPLE, dtype="float32")
    if sample.ndim == 2:
        sample = sample.mean(axis=1)
    if sr != SR:
        from models.waveform import resample

        sample = resample(sample, sr, SR)
    inputs = [
        ("pyannote sample", sample),
        (f"LibriSpeech concatenation ({long_seconds / 60:.0f} min)", long_recording(SHARED, long_seconds)),
    ]  # fmt: skip
    rows, single = [], False
    for name, wav in inputs:
        t = time_pipeline(diarizer, wav, repeats)
        log.info("diarization %s: %s", name, t)
        single = single or t["speakers"] == 1
        rows.append(
            f"| {name} | {t['duration']:.1f} | {t['total']:.2f} | {t['total'] / t['duration']:.4f} "
            f"| {t['vad']:.2f} | {t['embedding']:.2f} | {t['clustering']:.3f} | {t['speakers']:.0f} |"
        )
    caveat = (
        "\nOne speaker was found on a multi-speaker input: the embeddings were all alike (e.g. an "
        "untrained model), so clustering took its single-speaker shortcut and its time here is "
        "a lower bound; time a trained checkpoint for the clustering cost.\n"
        if single
        else ""
    )
    return (
        "## Diarization\n\n"
        f"`models.pipelines.diarize.Diarizer` (Silero VAD, {embedder.model_id.split(':')[0]} window "
        f"embeddings, {diarizer.cfg.clustering.method} clustering, default `DiarizationConfig`) "
        f"with {what}. One process, "
        f"{torch.get_num_threads()} torch thread(s); medians of {repeats} run(s) after a warm-up. "
        "RTF = processing seconds / audio seconds (lower is faster).\n\n"
        "| input | audio s | total s | RTF | VAD s | embedding s | clustering s | speakers |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n" + caveat
    )

"""Diarization benchmark section of ``BENCHMARKS.md``: real-time factor on this CPU.

Times ``models.pipelines.diarize.Diarizer`` (Silero VAD -> window embeddings -> clustering ->
assembly; the pipeline ``ray_jobs.diarize`` and ``POST /diarize`` run) on two inputs from the
shared real data: the 30 s pyannote sample, and a long recording built by concatenating
LibriSpeech train-clean-100 files with short (0.3-0.8 s) silences (10 min; 2 min with
``quick``). Each stage time is the median over repeated runs after one warm-up run (model and
ONNX session loading are not timed). Without a checkpoint an untrained ``ecapa_tdnn-tiny`` of
the realdata-test size (40 mel bins) is used: the cost of a forward does not depend on the
weights, only the number of speakers found (hence clustering time) may differ a little.

With a trained checkpoint the section also measures DER (:func:`der_comparison`; md-eval
collar 0.25 s, overlap scored) on 30-s excerpts: the pyannote sample and LibriSpeech
conversations of 1-4 speakers (``datasets.conversations``), for labelling all speech as one
speaker, the plain eigengap estimate (``PLAIN_NME``), the default settings, the calibrated merge
and the count given. VAD and window embeddings are computed once per file; only the clustering
differs between rows.
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

from datasets.audio import load_audio
from datasets.conversations import build_conversation
from datasets.ray_env import REPO_ROOT
from datasets.rttm import read_rttm
from models.calibration import eer_threshold, read_calibration
from models.hub import resolve_checkpoint
from models.metrics import diarization_error_rate
from models.pipelines.clustering import cluster_embeddings
from models.pipelines.diarize import (
    Diarizer,
    assemble,
    diarization_config,
    window_speech_seconds,
    windows,
)
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


COLLAR = 0.25  # md-eval convention: seconds on each side of every reference boundary
# The estimate before the count guards of models/pipelines/clustering.py.
PLAIN_NME = {
    "clustering.min_neighbours": 2,
    "clustering.eigengap_ratio": 0.0,
    "clustering.min_eigengap": 0.0,
    "clustering.min_cluster_seconds": 0.0,
}
DER_ROWS: dict[str, tuple[dict, bool]] = {  # name -> (overrides, count given)
    "plain eigengap estimate (before)": (PLAIN_NME, False),
    "default settings": ({}, False),
    "default + calibrated merge": ({"clustering.merge": True}, False),
    "AHC at the calibrated threshold": ({"clustering.method": "ahc"}, False),
    "count given": ({}, True),
}


def excerpts(
    root: Path, speakers: list[str] | None = None, per_count: int = 5, seed: int = 0
) -> list[tuple[str, np.ndarray, list[tuple[float, float, str]]]]:
    """``[(uri, wav at SR, reference turns)]``: the pyannote sample, then ``per_count``
    30-s LibriSpeech conversations of 1, 2, 3 and 4 speakers each, drawn (seeded) from
    ``speakers`` (file stems; default every file, one speaker each)."""
    sample, _ = load_audio(root / SAMPLE, target_sr=SR)
    out = [("pyannote", sample, read_rttm(root / SAMPLE.with_suffix(".rttm"))["sample"])]
    stems = speakers or sorted(p.stem for p in (root / LIBRISPEECH).glob("*.flac"))
    for n in (1, 2, 3, 4):
        for rep in range(per_count):
            pick = np.random.default_rng(seed + 1000 * n + rep).choice(len(stems), n, replace=False)
            names = [stems[i] for i in pick]
            recs = [load_audio(root / LIBRISPEECH / f"{s}.flac", target_sr=SR)[0] for s in names]
            wav, turns = build_conversation(
                recs, [s.split("-")[0] for s in names], SR, 30.0, seed=seed + 100 * n + rep
            )
            out.append((f"libri{n}spk_{rep}", wav, turns))
    return out


def der_comparison(
    checkpoint: str | Path,
    root: Path = SHARED,
    speakers: list[str] | None = None,
    per_count: int = 5,
) -> str:
    """Markdown table: mean DER, files worse than one speaker, mean |K est - K| per row of
    ``DER_ROWS``, and the pyannote sample's DER and count (module docstring)."""
    checkpoint = resolve_checkpoint(checkpoint)  # a name's record lies beside its cached file
    embedder = SpeakerEmbedder.from_checkpoint(checkpoint)
    t_eer = eer_threshold(read_calibration(checkpoint, embedder.model_id))
    base = Diarizer(embedder, verification_threshold=t_eer)
    files = []
    for uri, wav, ref in excerpts(root, speakers, per_count):
        regions = base.vad(wav, SR)
        wins = windows(regions, wav.size / SR, base.cfg)
        files.append((uri, wav.size / SR, regions, wins, base.embed_windows(wav, SR, wins), ref))
    one = {
        uri: diarization_error_rate(ref, [(s, e, "A") for s, e in regions], collar=COLLAR).der
        for uri, _, regions, _, _, ref in files
    }
    lines = [
        "| settings | mean DER | files worse than one speaker | mean abs(K est - K) | pyannote DER (K) |",
        "|---|---:|---:|---:|---:|",
        f"| all speech one speaker | {np.mean(list(one.values())):.3f} | - | - | {one['pyannote']:.3f} (1) |",
    ]  # fmt: skip
    for name, (over, given) in DER_ROWS.items():
        cfg = Diarizer(embedder, base.vad, diarization_config(over), t_eer).cfg
        ders, worse, kerr, py = [], 0, [], ""
        for uri, dur, regions, wins, emb, ref in files:
            k_ref = len({t[2] for t in ref})
            labels = cluster_embeddings(
                emb, cfg.clustering, num_speakers=k_ref if given else None,
                durations=window_speech_seconds(wins, regions),
            )  # fmt: skip
            hyp = [(s.start, s.end, s.speaker) for s in assemble(wins, labels, dur, cfg, regions)]
            der = diarization_error_rate(ref, hyp, collar=COLLAR).der
            k = len({h[2] for h in hyp})
            ders.append(der)
            worse += der > one[uri] + 0.005
            kerr.append(abs(k - k_ref))
            if uri == "pyannote":
                py = f"{der:.3f} ({k})"
        lines.append(
            f"| {name} | {np.mean(ders):.3f} | {worse} / {len(files)} | {np.mean(kerr):.2f} | {py} |"
        )
    thr = "none" if t_eer is None else f"{t_eer:.3f}"
    return (
        f"DER on {len(files)} 30-s excerpts (collar {COLLAR} s), checkpoint "
        f"`{Path(checkpoint).name}` (calibrated EER threshold {thr}):\n\n" + "\n".join(lines) + "\n"
    )


def diarization_section(checkpoint: str | Path | None, quick: bool) -> str:
    """Markdown section: RTF and stage split of diarization on the shared sample and long file."""
    if not (SHARED / SAMPLE).is_file():
        return "## Diarization\n\nSkipped: the shared real data (`../shared/data`) is absent.\n"
    repeats = 1 if quick else 3
    trained = checkpoint is not None
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
    der = f"\n{der_comparison(checkpoint, SHARED, per_count=2 if quick else 5)}" if trained else ""
    return (
        "## Diarization\n\n"
        f"`models.pipelines.diarize.Diarizer` (Silero VAD, {embedder.model_id.split(':')[0]} window "
        f"embeddings, {diarizer.cfg.clustering.method} clustering, default `DiarizationConfig`) "
        f"with {what}. One process, "
        f"{torch.get_num_threads()} torch thread(s); medians of {repeats} run(s) after a warm-up. "
        "RTF = processing seconds / audio seconds (lower is faster).\n\n"
        "| input | audio s | total s | RTF | VAD s | embedding s | clustering s | speakers |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n" + caveat + der
    )

"""Verify two recordings in this process (Ray-free, no CLI): embed both, cosine, decide.

The decision threshold is the caller's, else the model's calibration record (``none`` entry at
the operating point, written by ``python -m ray_jobs.evaluate``), else 0.5:
``models.calibration.cosine_threshold``, the rule the service applies to cosine scores.
Decoding is ``datasets.audio.load_audio`` (any rate and channel count, resampled to the model's);
embedding and scoring are ``models.pipelines.speaker.WaveformEmbedder.verify``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets.audio import load_audio
from models.calibration import cosine_threshold, read_calibration
from models.hub import resolve_checkpoint
from models.pipelines.speaker import WaveformEmbedder


def model_threshold(
    checkpoint: str | Path, model_id: str, operating_point: str = "eer"
) -> tuple[float, str]:
    """``(threshold, source)`` from the calibration record beside ``checkpoint`` (a file or a
    model name), else the default (``models.calibration.cosine_threshold``)."""
    record = read_calibration(resolve_checkpoint(checkpoint), model_id)
    return cosine_threshold(record, operating_point)


def verify_files(
    embedder: WaveformEmbedder,
    a: str | Path,
    b: str | Path,
    threshold: float,
    threshold_source: str = "given",
) -> dict[str, Any]:
    """``{"score", "same", "threshold", "threshold_source", "model_id", "a", "b",
    "seconds_a", "seconds_b"}`` for two audio files; ``same`` is ``score >= threshold``."""
    sr = embedder.sample_rate
    wav_a, _ = load_audio(str(a), target_sr=sr)
    wav_b, _ = load_audio(str(b), target_sr=sr)
    out = embedder.verify(wav_a, wav_b, sr, threshold)
    return {
        **out,
        "threshold_source": threshold_source,
        "model_id": embedder.model_id,
        "a": str(a),
        "b": str(b),
        "seconds_a": round(wav_a.size / sr, 3),
        "seconds_b": round(wav_b.size / sr, 3),
    }

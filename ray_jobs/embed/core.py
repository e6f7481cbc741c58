"""Speaker embeddings of a few audio files in this process (Ray-free, no CLI).

Decoding is ``datasets.audio.load_audio`` (resampled to the model's rate, mono); embedding is
``WaveformEmbedder.embed_batch`` (L2-normalised rows). Unlike the evaluation and extraction jobs,
which skip bad files and count them, a bad file here is the user's error and raises: the
command was given exactly these files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.audio import load_audio
from models.pipelines.speaker import WaveformEmbedder


def embed_files(embedder: WaveformEmbedder, paths: Sequence[str | Path]) -> np.ndarray:
    """``(N, D)`` float32 L2-normalised embeddings, one row per path, in order."""
    if not paths:
        raise ValueError("no audio files given")
    sr = embedder.sample_rate
    wavs = [load_audio(str(p), target_sr=sr)[0] for p in paths]
    return np.asarray(embedder.embed_batch(wavs, sr), dtype=np.float32)

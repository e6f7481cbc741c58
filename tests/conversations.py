"""Synthetic two-party conversations with their reference turns, shared by the diarization tests
(the batch job, the sweep, the ``/diarize`` route).

``models/test_diarize.py`` builds its own, harder conversations (immediate speaker changes).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from datasets.rttm import write_rttm
from datasets.synth import sample_voice, synthesize_utterance

SR = 16000
Turn = tuple[float, float, str]


def conversation(seed: int, n_speakers: int = 2, n_turns: int = 4) -> tuple[np.ndarray, list[Turn]]:
    """Alternating synthetic voices (2-3 s turns, 0.4-0.8 s pauses, 0.5 s lead-in) ->
    ``(wav: (T,) float32 at SR, [(start, end, speaker)])``."""
    rng = np.random.default_rng(seed)
    voices = [sample_voice(rng) for _ in range(n_speakers)]
    parts, truth = [np.zeros(SR // 2, np.float32)], []
    for i in range(n_turns):
        t = sum(len(p) for p in parts) / SR
        dur = float(rng.uniform(2.0, 3.0))
        parts.append(synthesize_utterance(voices[i % n_speakers], dur, SR, rng))
        truth.append((t, t + dur, f"s{i % n_speakers}"))
        parts.append(np.zeros(int(rng.uniform(0.4, 0.8) * SR), np.float32))
    return np.concatenate(parts), truth


def conversation_wav(seed: int) -> bytes:
    """``conversation(seed)`` as WAV bytes (a request body)."""
    buf = io.BytesIO()
    sf.write(buf, conversation(seed)[0], SR, format="WAV")
    return buf.getvalue()


def write_dev_set(audio_dir: Path, rttm_dir: Path, seeds: dict[str, int]) -> dict[str, list[Turn]]:
    """One conversation per ``uri -> seed``: ``<audio_dir>/<uri>.wav`` and its reference
    ``<rttm_dir>/<uri>.rttm`` (both folders created); returns ``uri -> turns``."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    rttm_dir.mkdir(parents=True, exist_ok=True)
    truths = {}
    for uri, seed in seeds.items():
        wav, truth = conversation(seed)
        sf.write(audio_dir / f"{uri}.wav", wav, SR)
        write_rttm(rttm_dir / f"{uri}.rttm", uri, truth)
        truths[uri] = truth
    return truths

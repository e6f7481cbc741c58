"""Conversations built from real single-speaker recordings, with their reference turns.

Diarization needs recordings with known speaker turns; real meetings with RTTMs are rare, so a
test or benchmark can cut turns (``turn_seconds``, uniform) from each speaker's own recording in
order (no sentence repeats) and join them with pauses (``gap_seconds``, uniform), speakers taking
turns in a seeded random order with no speaker twice in a row. The reference turns are exact (no
overlap, so DER measures the clustering and the VAD, not overlap handling). Used by
``ray_jobs/bench/diarize.py`` (LibriSpeech speakers of ``../shared/data``) and the realdata
diarization tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Turn = tuple[float, float, str]


def build_conversation(
    recordings: Sequence[np.ndarray],
    names: Sequence[str],
    sample_rate: int,
    seconds: float = 30.0,
    seed: int = 0,
    turn_seconds: tuple[float, float] = (2.0, 6.0),
    gap_seconds: tuple[float, float] = (0.2, 0.6),
) -> tuple[np.ndarray, list[Turn]]:
    """``recordings[i]`` (mono ``(T_i,)`` float32 at ``sample_rate``) of speaker ``names[i]`` ->
    ``(wav (T,) float32, [(start_s, end_s, name)])`` about ``seconds`` long.

    Every speaker speaks at least once (given enough time) and a speaker whose recording runs
    out stops being picked; the conversation ends at ``seconds`` or when every recording is used.
    """
    if len(recordings) != len(names) or not recordings:
        raise ValueError("give one name per recording, and at least one recording")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    rng = np.random.default_rng(seed)
    pos = [0] * len(recordings)
    order = list(rng.permutation(len(recordings)))  # each speaker once first, then random
    parts: list[np.ndarray] = []
    turns: list[Turn] = []
    t, last = 0, -1
    limit = int(seconds * sample_rate)
    for _ in range(10_000):  # bounded: every turn consumes a recording or the time budget
        if t >= limit:
            break
        left = [i for i in range(len(recordings)) if recordings[i].size - pos[i] > sample_rate]
        choices = [i for i in left if i != last] or left
        if not choices:
            break
        i = order.pop(0) if order and order[0] in choices else int(rng.choice(choices))
        if i in order:
            order.remove(i)
        n = int(rng.uniform(*turn_seconds) * sample_rate)
        n = min(n, recordings[i].size - pos[i], limit - t)
        if n < sample_rate // 2:
            break
        seg = np.asarray(recordings[i][pos[i] : pos[i] + n], dtype=np.float32)
        pos[i] += n
        turns.append((t / sample_rate, (t + n) / sample_rate, str(names[i])))
        gap = np.zeros(int(rng.uniform(*gap_seconds) * sample_rate), np.float32)
        parts += [seg, gap]
        t += n + gap.size
        last = i
    return np.concatenate(parts) if parts else np.zeros(0, np.float32), turns

"""Ray-free pieces of the TSE training input: which mixer a worker builds, and a batch of mixes.

``datasets/ray_data.py`` streams ``ray.data.range(N)`` through :func:`mix_rows` in CPU tasks:
row ``i`` of the whole run is mixed from seed ``(run seed, i)`` at training progress ``i / N``,
so every epoch sees fresh mixtures, the noisy-reference curriculum ramps over the run, and a
rerun with the same seed sees the same data. The mixer (speech pool over the packed shards,
noise and RIR banks) is built once per worker process from a small picklable :class:`MixerSpec`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from datasets.banks import open_bank
from datasets.mixing import DynamicMixer, mix_batch
from datasets.mixing_config import MixConfig
from datasets.speech_pools import ShardPool


@dataclass(frozen=True)
class MixerSpec:
    mix: MixConfig
    speech_manifest: str  # packed speech shards at mix.sample_rate
    speakers: tuple[str, ...]  # the speakers this mixer may draw (train or held-out split)
    noise: str = ""  # noise folder or packed manifest ("" = no noise)
    rir: str = ""  # RIR folder or packed manifest ("" = dry)
    seed: int = 0  # run seed: row i is mixed from seed (seed, i)


@functools.lru_cache(maxsize=4)
def build_mixer(spec: MixerSpec) -> DynamicMixer:
    """One mixer per (worker process, spec), reused by every batch; packed noise and RIR banks
    are read on demand (``datasets.banks``), never held whole."""
    sr = spec.mix.sample_rate
    return DynamicMixer(
        spec.mix,
        ShardPool(spec.speech_manifest, speakers=list(spec.speakers), sample_rate=sr),
        open_bank(spec.noise, sr) if spec.noise else None,
        open_bank(spec.rir, sr) if spec.rir else None,
    )


def row_seeds(ids: np.ndarray, seed: int) -> np.ndarray:
    """Per-row mixing seeds: a hash of (run seed, row id), so runs with other seeds differ."""
    ids = np.asarray(ids, dtype=np.uint64).reshape(-1)
    mixed = (ids + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    return (mixed >> np.uint64(2)).astype(np.int64)


def mix_rows(
    batch: dict[str, np.ndarray], spec: MixerSpec, total: int, first: int = 0
) -> dict[str, np.ndarray]:
    """``{"id": (B,)}`` row ids (counted from row ``first``) of a ``total``-row run ->
    ``{"mix", "target", "ref", "present"}``."""
    ids = np.asarray(batch["id"]).reshape(-1) + first
    progress = np.clip(ids / max(1, total - 1), 0.0, 1.0)
    return mix_batch(build_mixer(spec), row_seeds(ids, spec.seed), progress)

"""Our GE2E import against the ``resemblyzer`` package itself: EER on the same trials (Ray-free).

``ResemblyzerEmbedder`` puts ``resemblyzer.VoiceEncoder`` behind the surface that
``ray_jobs/evaluate/speaker.py``'s :func:`evaluate_tree` embeds with (``embed_batch``,
``embed``, ``embed_dim``, ``model_id``, ``sample_rate``), so the reference is scored by our
evaluation code, on our trials (same utterances, same seeded pairs), with our EER:

- ``preprocess="full"``: resemblyzer's own recipe, ``preprocess_wav`` (volume to -30 dBFS and
  webrtcvad silence trimming) then ``embed_utterance``;
- ``preprocess="volume"``: volume step only, the input our ``Ge2eMel`` front end reproduces, so
  these scores equal our model's (the parity test asserts it per embedding).

The CLI is ``python -m ray_jobs.compare_reference --resemblyzer --data-root DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.manifests import scan_source
from models.pipelines.speaker import SpeakerEmbedder
from models.waveform import AudioError, mono_float32, resample
from ray_jobs.evaluate.speaker import DEFAULT_MAX_TRIALS, evaluate_tree

PREPROCESS = ("full", "volume")


class ResemblyzerEmbedder:
    """``resemblyzer.VoiceEncoder`` (its bundled weights) with the embedder surface."""

    sample_rate = 16000

    def __init__(self, preprocess: str = "full", device: str = "cpu") -> None:
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        import resemblyzer  # the reference: imported only here (it loads librosa)

        self._rz = resemblyzer
        self.encoder = resemblyzer.VoiceEncoder(device, verbose=False)
        self.preprocess = preprocess
        self.model_id = f"resemblyzer-{preprocess}"
        self.embed_dim = 256

    def _wav(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        x = mono_float32(wav, sample_rate)
        if sample_rate != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        x = x.numpy()
        if self.preprocess == "volume":
            return self._rz.normalize_volume(x, -30, increase_only=True)
        x = self._rz.preprocess_wav(x)
        if x.size == 0:
            raise AudioError("resemblyzer's VAD found no speech in the clip")
        return x

    def embed(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        return self.encoder.embed_utterance(self._wav(wav, sample_rate)).astype(np.float32)

    def embed_batch(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        return np.stack([self.embed(w, sample_rate) for w in wavs])


def compare_eer(
    data_root: str | Path,
    checkpoint: str | Path,
    *,
    layout: str = "auto",
    max_trials: int = DEFAULT_MAX_TRIALS,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """EER/minDCF of our ``checkpoint`` and of resemblyzer (both preprocessings) on the trials
    ``evaluate_tree`` draws from ``data_root``: ``{"voxray": ..., "resemblyzer-full": ...,
    "resemblyzer-volume": ...}``."""
    utterances = scan_source(data_root, layout, with_durations=True)
    embedders: list[Any] = [SpeakerEmbedder.from_checkpoint(checkpoint)]
    embedders += [ResemblyzerEmbedder(p) for p in PREPROCESS]
    out = {}
    for name, emb in zip(["voxray", *(e.model_id for e in embedders[1:])], embedders, strict=True):
        out[name] = evaluate_tree(emb, utterances, max_trials=max_trials, seed=seed)
    return out

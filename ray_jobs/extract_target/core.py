"""Extract one speaker from a long recording: mixture + enrolment audio in, the target out
(Ray-free; the CLI is ``ray_jobs/extract_target/cli.py``).

A thin layer over ``models.pipelines.tse.TargetExtractor`` (the reference is encoded once; the
mixture goes through the model in overlapping chunks, cross-faded; pyannote's sliding-window
``Inference`` is the pattern). Files are decoded and resampled to the model's rate (48 kHz) by
``datasets.audio``; the output has the length of the resampled mixture.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from datasets.audio import AudioError, load_audio
from models.pipelines.tse import TargetExtractor


def _load(flag: str, path: str) -> tuple[np.ndarray, int]:
    """Decode ``path``; the error names the argument, so the user knows which file to fix."""
    try:
        return load_audio(path)
    except AudioError as exc:
        raise AudioError(f"{flag}: {exc}") from exc


def load_extractor(ckpt: Path, *, device: str, batch_size: int) -> TargetExtractor:
    """The TSE checkpoint ``ckpt`` on ``device``; a ``ValueError`` when CUDA is missing or the
    checkpoint is not a target speaker extraction model."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device here; use --device cpu")
    extractor = TargetExtractor.from_checkpoint(ckpt, device=device, batch_size=batch_size)
    if not hasattr(extractor.model, "encode_reference"):
        raise ValueError(f"{ckpt} is not a target speaker extraction checkpoint")
    return extractor


def extract_files(
    extractor: TargetExtractor,
    mix_path: str,
    ref_path: str,
    *,
    chunk_seconds: float,
    overlap_seconds: float,
) -> tuple[np.ndarray, float]:
    """The target speaker of the mixture file, ``(T,)`` float32 at ``extractor.sample_rate``,
    and the model time in seconds (decoding excluded)."""
    mix, mix_sr = _load("--mix", mix_path)
    ref, ref_sr = _load("--ref", ref_path)
    t0 = time.perf_counter()
    out = extractor(
        mix,
        mix_sr,
        ref,
        ref_sr,
        chunk_seconds=chunk_seconds,
        overlap_seconds=overlap_seconds,
    )
    return out, time.perf_counter() - t0

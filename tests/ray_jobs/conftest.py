"""Fixtures shared by the ray_jobs test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import models
from datasets.synth import generate_corpus

# The extraction corpus's two unreadable files, by utterance key.
EXTRACT_FAILURES = {"synth_spk000_zz_corrupt", "synth_spk001_zz_empty"}


@pytest.fixture(scope="module")
def extract_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(root, checkpoint)``: 4 speakers x 3 synthetic utterances under ``<root>/data`` plus one
    corrupt and one empty file (``EXTRACT_FAILURES``), and a tiny CAM++ ``<root>/model.pt``."""
    root = tmp_path_factory.mktemp("extract")
    generate_corpus(root / "data", num_speakers=4, utts_per_speaker=3, seconds=(0.6, 1.2))
    (root / "data/synth/spk000/zz_corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" * 4)
    (root / "data/synth/spk001/zz_empty.wav").write_bytes(b"")
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("campplus-tiny").eval(), root / "model.pt")
    return root, ckpt

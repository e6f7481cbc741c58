"""Training data of the ``codec`` task: random waveform crops of packed speech.

Any audio is valid input: a speaker tree, or a flat folder of unlabelled clips (ESC-50's
``audio/``, a folder of recordings; ``ray_jobs.train.prepare.scan_training_source``). It is
packed once at the codec's sample rate (24 kHz SoundStream, 16 kHz TinyStream);
``data.crop_seconds`` crops stream to the trainers. Held-out speakers give a fixed set of
validation crops (``val_mel_distance``, ``val_si_sdr`` every epoch) and the final scores
(``ray_jobs/evaluate/codec.py``: bitrate, SI-SDR, mel distance, PESQ and STOI at 16 kHz).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray.data

from datasets.audio import AudioError, crop_or_pad, load_audio
from datasets.ray_data import init_ray, waveform_crops_dataset
from datasets.speaker_transforms import CropSpec
from models.pipelines.codec import CodecPipeline
from ray_jobs.evaluate.codec import evaluate_files
from ray_jobs.train.data import TrainData, check_sample_rate
from ray_jobs.train.experiment import ExperimentConfig
from ray_jobs.train.prepare import prepare_speaker_data

log = logging.getLogger(__name__)

MAX_VAL_FILES = 64  # held-out utterances scored at the end (and cropped for validation)


def build(exp: ExperimentConfig, output: Path) -> TrainData:
    """The codec task's training data (module docstring); found by name by ``build_train_data``."""
    d = exp.data
    check_sample_rate(exp, d.sample_rate, "data.sample_rate")
    prepared = prepare_speaker_data(d, output, unlabelled=True)  # any audio, labels or not
    crop = CropSpec(
        speakers=prepared.speakers,
        crop_seconds=d.crop_seconds,
        crops_per_utterance=d.crops_per_utterance,
        sample_rate=d.sample_rate,
    )
    val_files = [u.path for u in prepared.val_utterances[:MAX_VAL_FILES]]
    val_rows = []
    rng = np.random.default_rng(d.seed)
    n = int(round(d.crop_seconds * d.sample_rate))
    for path in val_files:
        try:
            wav, _ = load_audio(path, target_sr=d.sample_rate)
        except AudioError as exc:
            log.warning("validation file skipped: %s", exc)
            continue
        val_rows.append({"wav": crop_or_pad(wav, n, rng).astype(np.float32)})
    init_ray()

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        return evaluate_files(CodecPipeline.from_checkpoint(checkpoint), val_files)

    return TrainData(
        train=waveform_crops_dataset(
            prepared.manifest,
            crop,
            epochs=exp.train.epochs,
            seed=d.seed,
            batch_size=exp.train.batch_size,
        ),
        rows_per_epoch=prepared.num_utterances * d.crops_per_utterance,
        val=ray.data.from_items(val_rows) if val_rows else None,
        summary={
            "train_speakers": len(prepared.speakers),
            "train_utterances": prepared.num_utterances,
            "val_files": len(val_files),
        },
        evaluate=evaluate if val_files else None,
        single_pass=True,  # one stream of all epochs, each its own seeded shuffle
    )

"""Training data of the ``speaker`` task: packed utterances -> crops -> fbank rows.

Rows are ``{"feats": (T, n_mels) float32, "label": int64}``; speed perturbation turns each
speaker into ``len(speed_factors)`` classes (3D-Speaker / WeSpeaker practice). Held-out speakers
(``data.val`` or ``data.val_speakers``) give whole-utterance validation rows (up to
``data.val_max_utterances``, ``ray_jobs/train/prepare.py``'s ``speaker_val_rows``), scored every
epoch as ``val_eer`` / ``val_min_dcf`` on a fixed trial list (``models/tasks/speaker.py``), and
the final evaluation: EER/minDCF over all of them (``ray_jobs/evaluate/speaker.py``). Its
thresholds become ``model.pt``'s calibration record (``models.calibration``), replacing any
record of an earlier run, so the service and diarization start from this run's operating point.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import ray.data

from datasets.ray_data import init_ray, speaker_training_dataset
from datasets.speaker_transforms import CropSpec, FeatureSpec
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.evaluate.speaker import evaluate_tree, write_calibration_record
from ray_jobs.train.data import TrainData
from ray_jobs.train.experiment import ExperimentConfig
from ray_jobs.train.prepare import prepare_bank, prepare_speaker_data, speaker_val_rows


def build(exp: ExperimentConfig, output: Path) -> TrainData:
    """The speaker task's training data (module docstring); found by name by ``build_train_data``."""
    data = prepare_speaker_data(exp.data, output)
    init_ray()
    speed = exp.data.augment.ordered_speed_factors
    crop = CropSpec(
        speakers=data.speakers,
        crop_seconds=exp.data.crop_seconds,
        crops_per_utterance=exp.data.crops_per_utterance,
        sample_rate=exp.data.sample_rate,
        speed_factors=speed,
        speed_perturb=exp.data.augment.speed_perturb,
    )
    pack_root = exp.data.pack_dir or output
    features = FeatureSpec(
        fbank=exp.data.fbank,
        augment=exp.data.augment,
        noise=prepare_bank(exp.data.noise, "noise", exp.data.sample_rate, pack_root),
        rir=prepare_bank(exp.data.rir, "rir", exp.data.sample_rate, pack_root),
    )
    val_utts = data.val_utterances
    # whole utterances through the inference front end (no dither), as the evaluation embeds them
    val_rows, _ = speaker_val_rows(
        val_utts,
        dataclasses.replace(exp.data.fbank, dither=0.0),
        exp.data.val_max_utterances,
        seed=exp.data.seed,
    )

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        embedder = SpeakerEmbedder.from_checkpoint(checkpoint)
        metrics = evaluate_tree(embedder, val_utts)
        metrics["val_speakers"] = len({u.speaker for u in val_utts})
        metrics["val_utterances"] = len(val_utts)
        what = f"val split of training: {metrics['val_speakers']} held-out speakers"
        metrics["calibration"] = write_calibration_record(
            checkpoint, embedder.model_id, metrics, data=what
        )
        return metrics

    return TrainData(
        train=speaker_training_dataset(
            data.manifest,
            crop,
            features,
            epochs=exp.train.epochs,
            seed=exp.data.seed,
            batch_size=exp.train.batch_size,
        ),
        rows_per_epoch=data.num_utterances * exp.data.crops_per_utterance,
        val=ray.data.from_items(val_rows) if val_rows else None,
        val_batch_size=1,  # whole utterances: no padding may reach the pooling
        task_config={"num_classes": crop.num_classes},
        meta={"speakers": list(data.speakers), "speed_factors": list(speed)},
        summary={
            "train_speakers": len(data.speakers),
            "train_utterances": data.num_utterances,
            "classes": crop.num_classes,
            "val_utterances_per_epoch": len(val_rows),
        },
        evaluate=evaluate if val_utts else None,
        single_pass=True,  # one stream of all epochs, each its own seeded shuffle
    )

"""Training data of the ``classify`` task: an ESC-50-format folder, one fold held out.

Training clips are decoded, cropped and between-class mixed in CPU tasks every epoch
(``datasets/esc50.py``); the held-out fold (``data.val_fold``) is scored with ACDNet's 10-crop
protocol after every epoch (``val_acc``) and at the end. ``python -m ray_jobs.train --cv`` runs
all folds for 5-fold cross-validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets.esc50 import (
    class_names,
    eval_rows,
    folds,
    read_esc50,
    training_rows,
)
from datasets.ray_data import clips_dataset, init_ray
from models.pipelines.classify import SoundClassifier
from ray_jobs.evaluate.classify import evaluate_clips
from ray_jobs.train.data import TrainData, check_sample_rate
from ray_jobs.train.experiment import ExperimentConfig


def build(exp: ExperimentConfig, output: Path) -> TrainData:
    """The classify task's training data (module docstring); found by name by ``build_train_data``."""
    d = exp.data
    check_sample_rate(exp, d.esc50.sample_rate, "data.esc50.sample_rate")
    clips = read_esc50(d.train)
    split = folds(clips, d.val_fold)
    names = class_names(clips, d.esc50.num_classes)
    pre = d.esc50
    init_ray()

    def rows(cs):
        return [{"path": c.path, "target": c.target} for c in cs]

    def evaluate(checkpoint: Path) -> dict[str, Any]:
        scores = evaluate_clips(SoundClassifier.from_checkpoint(checkpoint), split.val)
        return {"fold": d.val_fold, "val_clips": len(split.val), **scores}

    return TrainData(
        train=clips_dataset(
            rows(split.train),
            training_rows,
            fn_kwargs={"cfg": pre},
            batch_size=exp.train.batch_size,
        ),
        rows_per_epoch=len(split.train),
        val=clips_dataset(
            rows(split.val), eval_rows, fn_kwargs={"cfg": pre}, batch_size=16, shuffle=False
        ),
        task_config={"num_classes": pre.num_classes},
        meta={"classes": names, "val_fold": d.val_fold},
        summary={"train_clips": len(split.train), "val_clips": len(split.val), "classes": names},
        evaluate=evaluate,
    )

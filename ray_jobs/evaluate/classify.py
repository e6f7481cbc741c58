"""Sound-event classifier evaluation core (Ray-free, no CLI): 10-crop accuracy on ESC-50 clips.

The CLI is ``ray_jobs/evaluate/cli/classify.py`` (``python -m ray_jobs.evaluate --checkpoint
clf.pt``); the training job (``ray_jobs/train/data/classify.py``) calls :func:`evaluate_clips`.

Accuracy under ACDNet's 10-crop test protocol (Mohaimenuzzaman et al., Pattern Recognition 2023,
arXiv 2103.03483; reference mohaimenz/acdnet ``torch/trainer.py``: softmax averaged over 10
evenly spaced crops, read for understanding), implemented by
``models.pipelines.classify.SoundClassifier``. Reports overall accuracy, per-class accuracy and
the confusion counts (``confusion[true][pred]``) on one fold: ``--fold``, else the checkpoint's
``meta["val_fold"]``, else all clips.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from datasets.esc50 import Clip
from models.pipelines.classify import SoundClassifier

log = logging.getLogger("ray_jobs.evaluate.classify")


def evaluate_clips(clf: SoundClassifier, clips: Sequence[Clip], batch: int = 16) -> dict[str, Any]:
    """10-crop predictions of ``clips`` -> ``{"num_clips", "accuracy", "per_class": {name:
    {"accuracy", "count"}}, "confusion": [[int]] (C x C, rows = truth), "failed": [...]}``."""
    n_cls = len(clf.classes)
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    failed: list[dict[str, str]] = []
    for i in range(0, len(clips), batch):
        wavs, targets = [], []
        for clip in clips[i : i + batch]:
            try:
                wav, sr = load_audio(clip.path)
                clf._prepare(wav, sr)  # validate here so one bad clip does not sink the batch
            except AudioError as exc:
                failed.append({"path": clip.path, "error": str(exc)})
                continue
            if clip.target >= n_cls:
                raise ValueError(
                    f"{clip.path}: target {clip.target} but the model has {n_cls} classes"
                )
            wavs.append((wav, sr))
            targets.append(clip.target)
        if not wavs:
            continue
        # clips of one folder share a rate in practice; group by rate to stay exact
        for rate in {sr for _, sr in wavs}:
            idx = [j for j, (_, sr) in enumerate(wavs) if sr == rate]
            probs = clf.predict_proba([wavs[j][0] for j in idx], rate)
            for j, pred in zip(idx, probs.argmax(-1).tolist(), strict=True):
                confusion[targets[j], pred] += 1
    total = int(confusion.sum())
    counts = confusion.sum(1)
    per_class = {
        clf.classes[c]: {
            "accuracy": float(confusion[c, c] / counts[c]) if counts[c] else None,
            "count": int(counts[c]),
        }
        for c in range(n_cls)
    }
    return {
        "num_clips": total,
        "accuracy": float(np.trace(confusion) / total) if total else None,
        "per_class": per_class,
        "classes": list(clf.classes),
        "confusion": confusion.tolist(),
        "failed": failed,
    }


def write_report(out_dir: str | Path, result: dict[str, Any]) -> dict[str, str]:
    """``confusion.png`` (:func:`ray_jobs.plots.confusion_png`, classes with clips or
    predictions) and ``result.json`` in ``out_dir``; returns their paths by name."""
    from ray_jobs.plots import confusion_png

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fold = result.get("fold")
    png = confusion_png(
        result["confusion"],
        result["classes"],
        out / "confusion.png",
        title=f"confusion, {'fold ' + str(fold) if fold is not None else 'all clips'}: "
        f"{result['num_clips']} clips, accuracy "
        + ("n/a" if result["accuracy"] is None else f"{100 * result['accuracy']:.1f} %"),
    )
    (out / "result.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return {"confusion": str(png), "result": str(out / "result.json")}

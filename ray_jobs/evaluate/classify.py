"""Evaluate a sound-event classifier checkpoint on an ESC-50-format folder.

    python -m ray_jobs.evaluate --checkpoint clf.pt --data-root ESC50DIR [--fold K] [--json]

Accuracy under ACDNet's 10-crop test protocol (Mohaimenuzzaman et al., Pattern Recognition 2023,
arXiv 2103.03483; reference mohaimenz/acdnet ``torch/trainer.py``: softmax averaged over 10
evenly spaced crops, read for understanding), implemented by
``models.pipelines.classify.SoundClassifier``. Reports overall accuracy, per-class accuracy and
the confusion counts (``confusion[true][pred]``) on one fold: ``--fold``, else the checkpoint's
``meta["val_fold"]``, else all clips.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from datasets.esc50 import Clip, ESC50Error, read_esc50
from models.checkpoint import CheckpointError, read_checkpoint
from models.pipelines.classify import ClassifierInputError, SoundClassifier
from ray_jobs.cli import configure_cli_logging

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
            except (AudioError, ClassifierInputError) as exc:
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


def format_report(result: dict[str, Any]) -> str:
    acc = result["accuracy"]
    lines = [
        f"checkpoint {result['checkpoint']} on {result['data_root']} (fold {result['fold']})",
        f"accuracy: {acc:.4f} over {result['num_clips']} clips (10-crop)"
        if acc is not None
        else "no clip could be evaluated",
        "per class:",
    ]
    for name, r in result["per_class"].items():
        if r["count"]:
            lines.append(f"  {name:24s} {r['accuracy']:.3f}  ({r['count']} clips)")
    if result["failed"]:
        lines.append(f"failed clips: {len(result['failed'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="classify-family checkpoint (.pt)")
    p.add_argument("--data-root", required=True, help="ESC-50-format folder (audio/ + meta CSV)")
    p.add_argument("--fold", type=int, default=None, help="evaluate this fold (default: val_fold)")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate at most N clips")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    configure_cli_logging()
    try:
        meta = read_checkpoint(args.checkpoint).get("meta") or {}
        clf = SoundClassifier.from_checkpoint(args.checkpoint)
        clips = read_esc50(args.data_root)
        fold = args.fold if args.fold is not None else meta.get("val_fold")
        if fold is not None:
            clips = [c for c in clips if c.fold == int(fold)]
            if not clips:
                raise ESC50Error(f"no clips in fold {fold} of {args.data_root}")
        clips = clips[: args.max_clips] if args.max_clips else clips
        result = evaluate_clips(clf, clips)
    except (FileNotFoundError, CheckpointError, ESC50Error, KeyError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    result.update(checkpoint=str(args.checkpoint), data_root=str(args.data_root), fold=fold)
    print(json.dumps(result, sort_keys=True) if args.json else format_report(result))
    return 0

"""Evaluate a sound-event classifier checkpoint on an ESC-50-format folder (the CLI of
``ray_jobs/evaluate/classify.py``).

    python -m ray_jobs.evaluate --checkpoint clf.pt --data-root ESC50DIR [--fold K] [--json] \
        [--report DIR]

One fold is scored: ``--fold``, else the checkpoint's ``meta["val_fold"]``, else all clips.
``--report DIR`` writes ``confusion.png`` (the confusion matrix) and ``result.json`` there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from datasets.esc50 import ESC50Error, read_esc50
from models.checkpoint import read_checkpoint
from models.pipelines.classify import SoundClassifier
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, user_error
from ray_jobs.evaluate.classify import evaluate_clips, write_report


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
        prog="python -m ray_jobs.evaluate",
        description="Evaluate a sound-event classifier checkpoint on an ESC-50-format folder.",
    )
    p.add_argument("--checkpoint", required=True, help="classify-family checkpoint (.pt)")
    p.add_argument("--data-root", required=True, help="ESC-50-format folder (audio/ + meta CSV)")
    p.add_argument("--fold", type=int, default=None, help="evaluate this fold (default: val_fold)")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate at most N clips")
    p.add_argument("--report", help="write confusion.png (confusion matrix) and result.json here")
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
    except USER_ERRORS as exc:  # CheckpointError and ESC50Error are ValueErrors
        return user_error(exc)
    result.update(checkpoint=str(args.checkpoint), data_root=str(args.data_root), fold=fold)
    if args.report:
        result["report"] = write_report(args.report, result)
    print(json.dumps(result, sort_keys=True) if args.json else format_report(result))
    return 0

"""Evaluate a speaker embedder: EER and minDCF on a labelled tree (the CLI of
``ray_jobs/evaluate/speaker.py``).

    python -m ray_jobs.evaluate --checkpoint runs/campplus/best.pt --data-root data/vox1_test \\
        [--trials veri_test2.txt] [--layout auto] [--max-trials 200000] [--json]

``--checkpoint`` is a voxray checkpoint (.pt) or an ONNX model from ``ray_jobs.export`` (FP32 or
INT8). Trials: ``--trials FILE`` or same/different-speaker pairs of the tree (see the core's
docstring). Output: a readable report, or with ``--json`` exactly one JSON object on stdout
(logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from datasets.manifests import scan_source
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, existing_checkpoint, user_error
from ray_jobs.evaluate.speaker import DEFAULT_MAX_TRIALS, evaluate_tree, read_trials

log = logging.getLogger("ray_jobs.evaluate.cli.speaker")


def format_report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"model       {result['model_id']}",
            f"utterances  {result['num_utterances']} ({result['num_speakers']} speakers, "
            f"{result['num_failed_utterances']} failed)",
            f"trials      {result['num_trials']} ({result['num_target']} target, "
            f"{result['num_nontarget']} non-target; {result['trials_source']})",
            f"EER         {100 * result['eer']:.3f} %  (threshold {result['eer_threshold']:.4f})",
            f"minDCF      p=0.01: {result['min_dcf_0.01']:.4f}   "
            f"p=0.05: {result['min_dcf_0.05']:.4f}",
        ]
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate",
        description="Evaluate a speaker embedder: EER and minDCF on a labelled tree.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="voxray speaker-model checkpoint (.pt) or an exported ONNX model (.onnx)",
    )
    p.add_argument("--data-root", required=True, help="labelled tree: [dataset/]speaker/utt.wav")
    p.add_argument("--trials", help="trials file; default: same/different pairs of the tree")
    p.add_argument(
        "--layout",
        default="auto",
        help="auto, dataset/speaker/utt, speaker/utt, or a file-name pattern (librispeech, fsdd, "
        "cmu-arctic); --data-root also takes comma-separated PATH@LAYOUT sources",
    )
    p.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    p.add_argument("--seed", type=int, default=0, help="seed of the pair subsample")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--min-seconds", type=float, default=0.0, help="skip shorter utterances")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        ckpt = existing_checkpoint(args.checkpoint)
        if ckpt.suffix == ".onnx":  # an exported model (ray_jobs.export), FP32 or INT8
            from models.pipelines.onnx_backend import OnnxSpeakerEmbedder

            embedder = OnnxSpeakerEmbedder.from_file(ckpt, min_seconds=args.min_seconds)
        else:
            embedder = SpeakerEmbedder.from_checkpoint(
                ckpt, device=args.device, min_seconds=args.min_seconds
            )
        utterances = scan_source(args.data_root, args.layout, with_durations=True)
        trials = read_trials(args.trials) if args.trials else None
        log.info(
            "evaluating %s on %d utterances from %s",
            embedder.model_id,
            len(utterances),
            args.data_root,
        )
        result = evaluate_tree(
            embedder, utterances, trials, max_trials=args.max_trials, seed=args.seed
        )
    except USER_ERRORS as exc:
        return user_error(exc)
    result["checkpoint"] = str(args.checkpoint)
    result["data_root"] = str(args.data_root)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in result.items()}, sort_keys=True))
    else:
        print(format_report(result))
    return 0

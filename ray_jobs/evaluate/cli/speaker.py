"""Evaluate a speaker embedder: EER and minDCF on a labelled tree (the CLI of
``ray_jobs/evaluate/speaker.py``).

    python -m ray_jobs.evaluate --checkpoint runs/campplus/best.pt --data-root data/vox1_test \\
        [--trials veri_test2.txt] [--layout auto] [--max-trials 200000] [--json] \\
        [--cohort runs/extract-cohort/speakers.parquet --asnorm-topk 100] [--report DIR] \\
        [--calibrate]

``--checkpoint`` is a voxray checkpoint (.pt) or an ONNX model from ``ray_jobs.export`` (FP32 or
INT8). Trials: ``--trials FILE`` or same/different-speaker pairs of the tree (see the core's
docstring). Output: a readable report, or with ``--json`` exactly one JSON object on stdout
(logs go to stderr). ``--cohort`` adds AS-norm scores (a cohort of speakers disjoint from the
trials, e.g. an extraction job's ``speakers.parquet``); ``--report DIR`` writes ``scores.tsv``
(one line per trial: enroll, test, label, score), ``det.png`` (DET curve with the EER and
minDCF points), ``scores_hist.png`` (target vs non-target histograms) and ``result.json`` there.

Calibration record (``models.calibration``, ``<checkpoint>.calibration.json``): ``--calibrate``
writes the measured EER and minDCF thresholds into it, replacing those of the same score
normalisation; without ``--calibrate`` they are written only when the record has no entry for
that normalisation yet (a first evaluation calibrates the model; later evaluations on other
data never move the service's operating point behind the user's back).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from datasets import storage
from datasets.cohort import load_cohort
from datasets.manifests import scan_source
from models.calibration import calibration_path
from ray_jobs.cli import (
    USER_ERRORS,
    configure_cli_logging,
    existing_checkpoint,
    speaker_embedder,
    user_error,
)
from ray_jobs.evaluate.speaker import (
    DEFAULT_ASNORM_TOPK,
    DEFAULT_MAX_TRIALS,
    SCORES_FILE,
    evaluate_tree,
    read_trials,
    write_calibration_record,
)

log = logging.getLogger("ray_jobs.evaluate.cli.speaker")


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"model       {result['model_id']}",
        f"utterances  {result['num_utterances']} ({result['num_speakers']} speakers, "
        f"{result['num_failed_utterances']} failed)",
        f"trials      {result['num_trials']} ({result['num_target']} target, "
        f"{result['num_nontarget']} non-target; {result['trials_source']})",
        f"EER         {100 * result['eer']:.3f} %  (threshold {result['eer_threshold']:.4f})",
        f"minDCF      p=0.01: {result['min_dcf_0.01']:.4f}   p=0.05: {result['min_dcf_0.05']:.4f}",
    ]
    if "asnorm" in result:
        a, sn = result["asnorm"], result["score_norm"]
        lines += [
            f"AS-norm     top {sn['top_k']} of a {sn['cohort_size']}-embedding cohort",
            f"  EER       {100 * a['eer']:.3f} %  (threshold {a['eer_threshold']:.4f})",
            f"  minDCF    p=0.01: {a['min_dcf_0.01']:.4f}   p=0.05: {a['min_dcf_0.05']:.4f}",
        ]
    if result.get("calibration"):
        lines.append(
            f"calibration {', '.join(result['calibration'])} written to "
            f"{result['calibration_file']}"
        )
    for name, path in (result.get("report") or {}).items():
        lines.append(f"{name:11s} {path}")
    return "\n".join(lines)


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
    p.add_argument(
        "--cohort",
        help="AS-norm cohort: speakers.parquet/utterances.parquet of ray_jobs.extract, or a .npy "
        "(C, D) matrix, of speakers disjoint from the trials",
    )
    p.add_argument("--asnorm-topk", type=int, default=DEFAULT_ASNORM_TOPK)
    p.add_argument(
        "--report",
        help=f"folder for {SCORES_FILE} (per-trial scores), det.png (DET curve), scores_hist.png "
        "(target vs non-target scores) and result.json",
    )
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="write the measured thresholds into CHECKPOINT.calibration.json, replacing the "
        "entry of the same score normalisation (without it: only when there is none)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        ckpt = existing_checkpoint(args.checkpoint)
        embedder = speaker_embedder(ckpt, device=args.device, min_seconds=args.min_seconds)
        utterances = scan_source(args.data_root, args.layout, with_durations=True)
        trials = read_trials(args.trials) if args.trials else None
        log.info(
            "evaluating %s on %d utterances from %s",
            embedder.model_id,
            len(utterances),
            args.data_root,
        )
        cohort = load_cohort(args.cohort, embedder.embed_dim) if args.cohort else None
        # a folder or a URI (s3://...: staged in a local folder, uploaded at the end)
        report = storage.stage_dir(args.report, "report") if args.report else None
        result = evaluate_tree(
            embedder,
            utterances,
            trials,
            max_trials=args.max_trials,
            seed=args.seed,
            cohort=cohort,
            asnorm_topk=args.asnorm_topk,
            report_dir=report,
        )
        result["calibration"] = write_calibration_record(
            ckpt,
            embedder.model_id,
            result,
            data=str(args.data_root) + (f" (trials {args.trials})" if args.trials else ""),
            cohort=str(args.cohort) if args.cohort else None,
            overwrite=args.calibrate,
        )
        result["calibration_file"] = str(calibration_path(ckpt))
    except USER_ERRORS as exc:
        return user_error(exc)
    result["checkpoint"] = str(args.checkpoint)
    result["data_root"] = str(args.data_root)
    if report is not None:
        (report / "result.json").write_text(
            json.dumps({k: _json_safe(v) for k, v in result.items()}, indent=2, sort_keys=True)
        )
        if storage.is_uri(args.report):
            storage.upload_tree(report, args.report)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in result.items()}, sort_keys=True))
    else:
        print(format_report(result))
    return 0

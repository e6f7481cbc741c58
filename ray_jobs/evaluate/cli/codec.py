"""Evaluate a neural codec checkpoint on audio files, against Opus (and Lyra v2) baselines (the
CLI of ``ray_jobs/evaluate/codec.py``).

    python -m ray_jobs.evaluate --checkpoint codec.pt --data-root DIR [--num-quantizers N ...]
        [--opus] [--lyra] [--report DIR] [--json]

Output: a Markdown table, or with ``--json`` one JSON object on stdout (logs on stderr).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from datasets import storage
from datasets.audio import AUDIO_EXTENSIONS
from models.pipelines.codec import CodecPipeline
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, user_error
from ray_jobs.evaluate.codec import (
    audio_files,
    evaluate_files,
    evaluate_opus,
    format_table,
    write_report,
)
from ray_jobs.evaluate.lyra import evaluate_lyra


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate",
        description="Evaluate a neural codec checkpoint on audio files, against Opus and Lyra v2.",
    )
    p.add_argument("--checkpoint", required=True, help="codec checkpoint (.pt)")
    p.add_argument("--data-root", required=True, help="audio file or folder (scanned recursively)")
    p.add_argument(
        "--num-quantizers", type=int, nargs="+", default=None, help="bitrates to evaluate"
    )
    p.add_argument("--max-files", type=int, default=None, help="evaluate at most N files")
    p.add_argument(
        "--opus", action="store_true", help="add the Opus baseline (needs opusenc/ffmpeg)"
    )
    p.add_argument("--lyra", action="store_true", help="add Lyra v2 (needs ai-edge-litert)")
    p.add_argument("--lyra-dir", default=None, help="folder of the Lyra v2 TFLite files")
    p.add_argument(
        "--report",
        default=None,
        help="write report.md and a listening page (index.html: players, spectrograms, "
        "metrics per clip) here",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        pipeline = CodecPipeline.from_checkpoint(args.checkpoint, device=args.device)
        files = audio_files(args.data_root, args.max_files)
        if not files:
            raise FileNotFoundError(
                f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {args.data_root}"
            )
        nqs = args.num_quantizers or [pipeline.num_quantizers]
        for n in nqs:
            if not 1 <= n <= pipeline.num_quantizers:
                raise ValueError(f"--num-quantizers {n} is not in [1, {pipeline.num_quantizers}]")
    except USER_ERRORS as exc:
        return user_error(exc)
    runs = []
    for n in nqs:
        run = {"num_quantizers": n, **evaluate_files(pipeline, files, num_quantizers=n)}
        run["opus"] = (
            evaluate_opus(files, pipeline.sample_rate, run["bitrate_kbps"] or 0.0)
            if args.opus
            else None
        )
        runs.append(run)
    lyra = None
    if args.lyra:
        lyra = evaluate_lyra(files, lyra_dir=args.lyra_dir)
    result = {
        "checkpoint": str(args.checkpoint),
        "model_id": pipeline.model_id,
        "data_root": str(args.data_root),
        "runs": runs,
        "opus": runs[0]["opus"] if args.opus else None,
        "lyra": lyra,
    }
    if args.report:
        local = write_report(
            result,
            pipeline,
            files,
            storage.stage_dir(args.report, "report"),
            lyra_dir=args.lyra_dir,
        )
        page = local.parent / "index.html"
        if storage.is_uri(args.report):  # staged in a local folder, then uploaded
            storage.upload_tree(local.parent, args.report)
            local = storage.join(args.report, local.name)
            page = storage.join(args.report, "index.html")
        result["report"] = str(local)
        result["listening_page"] = str(page)
    if args.json:
        print(json.dumps(result, sort_keys=True, default=float))
    else:
        print(format_table(result))
    return 0

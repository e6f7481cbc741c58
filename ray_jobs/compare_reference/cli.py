"""Check voxray's 3D-Speaker-compatible speaker models against the reference implementation.

Usage (the reference is the installed ``speakerlab`` package, 3D-Speaker's code in the dev
dependency group; ``--reference-root`` uses a checkout instead, which must not live inside this
repository)::

    uv run python -m ray_jobs.compare_reference
    uv run python -m ray_jobs.compare_reference --entries campplus_192,eres2net_192 --json
    uv run python -m ray_jobs.compare_reference --reference-root /tmp/3D-Speaker
    # GE2E: our import against the resemblyzer package, EER on the same trials
    uv run python -m ray_jobs.compare_reference --resemblyzer --checkpoint ge2e.pt \
        --data-root DIR [--layout auto] [--max-trials 200000]

Prints a Markdown table, or a JSON list of per-entry results with ``--json`` (progress in the
log, on stderr). The comparison itself is ``ray_jobs/compare_reference/core.py``'s (3D-Speaker)
and ``ray_jobs/compare_reference/resemblyzer.py``'s (GE2E).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from ray_jobs.cli import USER_ERRORS, configure_cli_logging, existing_checkpoint, user_error
from ray_jobs.compare_reference.core import compare_entry, default_json_path, markdown

log = logging.getLogger("ray_jobs.compare_reference.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.compare_reference", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--reference-root",
        type=Path,
        default=None,
        help="a 3D-Speaker checkout (default: the installed speakerlab package)",
    )
    parser.add_argument(
        "--resemblyzer",
        action="store_true",
        help="compare a GE2E checkpoint with the resemblyzer package: EER on the same trials",
    )
    parser.add_argument("--checkpoint", type=Path, help="--resemblyzer: our GE2E checkpoint")
    parser.add_argument("--data-root", help="--resemblyzer: labelled tree to draw trials from")
    parser.add_argument("--layout", default="auto", help="--resemblyzer: layout of --data-root")
    parser.add_argument("--max-trials", type=int, default=200_000)
    parser.add_argument("--entries", default="all", help="'all' or comma-separated entry names")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--reference-json", type=Path, default=None, help="state-dict listing")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs at batch 1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_cli_logging()
    if args.resemblyzer:
        if args.checkpoint is None or args.data_root is None:
            parser.error("--resemblyzer needs --checkpoint and --data-root")
        return _resemblyzer(args)
    if args.reference_root is None:
        parser.error("--reference-root is required (or --resemblyzer)")

    path = args.reference_json or default_json_path()
    if not path.is_file():
        parser.error(f"{path} not found; pass --reference-json or set VOXRAY_SHARED")
    specs = json.loads(path.read_text())
    names = list(specs) if args.entries == "all" else args.entries.split(",")
    unknown = [n for n in names if n not in specs]
    if unknown:
        parser.error(f"unknown entries {unknown}; known: {', '.join(specs)}")
    torch.set_num_threads(args.threads)

    results = []
    for name in names:
        res = compare_entry(name, specs[name], args.reference_root, args.repeats, args.seed)
        if res["status"] != "ok":
            log.warning("%s: %s", name, res["status"])
        else:  # progress in the log (stderr): a full run takes minutes
            log.info(
                "%s: max abs diff %.2e, ratio b1 %.2f, b16 %.2f",
                name, res["max_abs_diff"], res["b1_ratio"], res["b16_ratio"],
            )  # fmt: skip
        results.append(res)
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return 0


def _resemblyzer(args: argparse.Namespace) -> int:
    from ray_jobs.compare_reference.resemblyzer import compare_eer

    try:
        results = compare_eer(
            args.data_root,
            existing_checkpoint(str(args.checkpoint)),
            layout=args.layout,
            max_trials=args.max_trials,
            seed=args.seed,
        )
    except USER_ERRORS as exc:
        return user_error(exc)
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print("| model | EER % | minDCF 0.01 | trials | embed s |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {100 * r['eer']:.2f} | {r['min_dcf_0.01']:.4f} | {r['num_trials']} "
            f"| {r['embed_seconds']:.0f} |"
        )
    return 0

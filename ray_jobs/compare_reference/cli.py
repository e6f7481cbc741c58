"""Check voxray's 3D-Speaker-compatible speaker models against the reference implementation.

Usage (the reference is the installed ``speakerlab`` package, 3D-Speaker's code in the dev
dependency group; ``--reference-root`` uses a checkout instead, which must not live inside this
repository)::

    uv run python -m ray_jobs.compare_reference
    uv run python -m ray_jobs.compare_reference --entries campplus_192,eres2net_192 --json
    uv run python -m ray_jobs.compare_reference --reference-root /tmp/3D-Speaker

Prints a Markdown table, or a JSON list of per-entry results with ``--json`` (progress in the
log, on stderr). The comparison itself is ``ray_jobs/compare_reference/core.py``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from ray_jobs.cli import configure_cli_logging
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
    parser.add_argument("--entries", default="all", help="'all' or comma-separated entry names")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--reference-json", type=Path, default=None, help="state-dict listing")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs at batch 1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_cli_logging()

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

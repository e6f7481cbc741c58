"""Convert a published checkpoint into a voxray checkpoint.

    python -m ray_jobs.import_checkpoint --from 3dspeaker --arch campplus_192 IN.bin OUT.pt
    python -m ray_jobs.import_checkpoint --from resemblyzer [IN.pt] OUT.pt   # IN: the wheel's

The conversion is ``ray_jobs/import_checkpoint/core.py``'s.
"""

from __future__ import annotations

import argparse
import logging

from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.import_checkpoint.core import SOURCES, import_3dspeaker, import_resemblyzer

log = logging.getLogger("ray_jobs.import_checkpoint.cli")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.import_checkpoint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--from", dest="source", choices=SOURCES, required=True)
    p.add_argument("--arch", help="reference entry, e.g. campplus_192 (3dspeaker: required)")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[INPUT] OUTPUT",
        help="the published state dict (.bin/.ckpt/.pt; optional for resemblyzer, whose "
        "installed wheel holds its weights), then the voxray checkpoint to write (.pt)",
    )
    args = p.parse_args(argv)
    if len(args.paths) > 2 or (args.source == "3dspeaker" and len(args.paths) != 2):
        p.error("expected INPUT OUTPUT (resemblyzer: [INPUT] OUTPUT)")
    if args.source == "3dspeaker" and args.arch is None:
        p.error("--from 3dspeaker needs --arch")
    configure_cli_logging()
    *src, dst = args.paths
    try:
        if args.source == "resemblyzer":
            out = import_resemblyzer(dst, src[0] if src else None)
        else:
            out = import_3dspeaker(args.arch, src[0], dst)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return user_error(exc)
    log.info("wrote %s", out)
    return 0

"""Convert a published checkpoint into a voxray checkpoint.

    python -m ray_jobs.import_checkpoint --from 3dspeaker --arch campplus_192 IN.bin OUT.pt

The conversion is ``ray_jobs/import_checkpoint/core.py``'s.
"""

from __future__ import annotations

import argparse
import logging

from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.import_checkpoint.core import SOURCES, import_3dspeaker

log = logging.getLogger("ray_jobs.import_checkpoint.cli")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.import_checkpoint", description=__doc__.split("\n")[0]
    )
    p.add_argument("--from", dest="source", choices=SOURCES, required=True)
    p.add_argument("--arch", required=True, help="reference entry, e.g. campplus_192")
    p.add_argument("input", help="the published state dict (.bin/.ckpt/.pt)")
    p.add_argument("output", help="voxray checkpoint to write (.pt)")
    args = p.parse_args(argv)
    configure_cli_logging()
    try:
        out = import_3dspeaker(args.arch, args.input, args.output)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return user_error(exc)
    log.info("wrote %s", out)
    return 0

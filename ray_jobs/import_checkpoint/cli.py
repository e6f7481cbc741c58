"""Convert a published checkpoint into a voxray checkpoint.

    python -m ray_jobs.import_checkpoint --from 3dspeaker [--arch campplus_192] IN.bin OUT.pt
    python -m ray_jobs.import_checkpoint modelscope:iic/speech_campplus_sv_zh-cn_16k-common OUT.pt
    python -m ray_jobs.import_checkpoint --from LAYOUT OUT.pt   # a layout that ships its weights

``--from`` is a layout of ``models/hub/importers`` (detected from the state dict when left
out); ``--arch`` is detected where the layout allows. ``IN`` may be a model name
(``modelscope:``, ``hf:``, ``pip:``; see README "Pretrained models"), and may be left out for a
layout whose importer defines ``default_source()``. The conversion is ``models.hub``'s.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from models.hub import convert_file, parse_spec, resolve_checkpoint
from models.hub.importers import importer, layouts
from ray_jobs.cli import configure_cli_logging, user_error

log = logging.getLogger("ray_jobs.import_checkpoint.cli")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.import_checkpoint",
        usage="%(prog)s [--from LAYOUT] [--arch ARCH] [IN] OUT",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("--from", dest="layout", choices=sorted(layouts()), help="published layout")
    p.add_argument("--arch", help="the publisher's architecture, e.g. campplus_192 (detected)")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="[IN] OUT: a published file or model name, and the voxray checkpoint to write",
    )
    args = p.parse_args(argv)
    if len(args.paths) > 2:
        p.error("give at most IN and OUT")
    configure_cli_logging()
    *src, dst = args.paths
    try:
        out = _convert(args.layout, src[0] if src else None, Path(dst), args.arch)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        return user_error(exc)
    log.info("wrote %s", out)
    return 0


def _convert(layout: str | None, src: str | None, dst: Path, arch: str | None) -> Path:
    if src is None:
        if layout is None or not hasattr(importer(layout), "default_source"):
            raise ValueError(
                "give the published file IN (only a layout that ships weights can omit it)"
            )
        src, layout = f"pip:{layout}", None  # the weights the installed package ships, by name
    if parse_spec(src) is not None:  # a model by name: resolved (and cached) by models.hub
        if layout is not None or arch is not None:
            raise ValueError(f"{src} names its own layout and arch; drop --from/--arch")
        # the cached checkpoint, copied under a temporary name and renamed: never a partial OUT
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(resolve_checkpoint(src), tmp)
        os.replace(tmp, dst)
        return dst
    return convert_file(layout, src, dst, arch=arch)

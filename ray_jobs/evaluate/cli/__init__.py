"""``python -m ray_jobs.evaluate``: the one evaluation entry point, for every model family.

    python -m ray_jobs.evaluate --checkpoint CKPT --data-root DIR [family options] [--json]

The checkpoint's family (``models.registry.get_entry(model_name).family``; for an ``.onnx`` file
its ``family``/``model_name`` metadata, else ``speaker``) picks the family's CLI,
``ray_jobs/evaluate/cli/<family>.py``, found by name (``ray_jobs.families``), which takes the
family's own arguments (``python -m ray_jobs.evaluate --checkpoint tse.pt --help``). Its Ray-free
core is ``ray_jobs/evaluate/<family>.py``, which the training job also calls.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from models.checkpoint import read_checkpoint
from models.registry import get_entry
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, existing_checkpoint, user_error
from ray_jobs.families import family_module

PACKAGE = "ray_jobs.evaluate.cli"
DEFAULT_FAMILY = "speaker"  # what --help without a checkpoint shows


def onnx_family(path: str | Path) -> str:
    """Family of an exported ``.onnx`` model from its metadata (``family``, else the registry
    entry of ``model_name``); files exported before the ``family`` key existed are speaker
    embedders."""
    import onnx  # only for .onnx files

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "family" in props:
        return props["family"]
    if "model_name" in props:
        return get_entry(props["model_name"]).family
    return "speaker"


def checkpoint_family(path: str | Path) -> str:
    """``speaker`` / ``tse`` / ``codec`` / ``classify`` ... of a voxray checkpoint or ONNX file."""
    path = existing_checkpoint(path)
    if path.suffix == ".onnx":
        return onnx_family(path)
    return get_entry(read_checkpoint(path)["model_name"]).family


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkpoint")
    known, _ = pre.parse_known_args(argv)
    family = DEFAULT_FAMILY
    if known.checkpoint:  # without one, the family's parser reports the missing argument
        configure_cli_logging()
        try:
            family = checkpoint_family(known.checkpoint)
            cli = family_module(PACKAGE, family, "main", "evaluator")
        except USER_ERRORS as exc:
            return user_error(exc)
    else:
        cli = family_module(PACKAGE, family, "main", "evaluator")
    return cli.main(argv)

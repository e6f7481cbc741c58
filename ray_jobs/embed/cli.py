"""Speaker embeddings of audio files, one model, no Ray cluster and no server.

    python -m ray_jobs.embed a.wav [b.wav ...] [-o a.npy] [--checkpoint PATH|NAME] [--device cpu]

``-o FILE.npy``: one input -> a ``(D,)`` float32 array; several -> ``(N, D)``, rows in argument
order; a JSON summary (``output``, ``shape``, ``model_id``) goes to stdout. Without ``-o``, one
JSON line per file (``path``, ``model_id``, ``embedding``). Embeddings are L2-normalised, so the
dot product of two is their cosine score. ``--checkpoint`` as in ``python -m ray_jobs.verify``
(default ``pip:resemblyzer``, offline). Exit status 2 on a user's error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ray_jobs.cli import (
    USER_ERRORS,
    add_first_touch_arguments,
    configure_cli_logging,
    speaker_embedder,
    user_error,
)
from ray_jobs.embed.core import embed_files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.embed", description="Speaker embeddings of audio files."
    )
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("-o", "--output", help="write the embeddings here (.npy)")
    add_first_touch_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        if args.output and Path(args.output).suffix != ".npy":
            raise ValueError(f"-o {args.output}: give a .npy file name")
        embedder = speaker_embedder(args.checkpoint, device=args.device)
        emb = embed_files(embedder, args.audio)
    except USER_ERRORS as exc:  # AudioError, HubError are ValueErrors
        return user_error(exc)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        arr = emb[0] if len(args.audio) == 1 else emb
        np.save(out, arr)
        summary = {"output": str(out), "shape": list(arr.shape), "model_id": embedder.model_id}
        print(json.dumps(summary))
    else:
        for path, row in zip(args.audio, emb, strict=True):
            print(json.dumps({"path": path, "model_id": embedder.model_id,
                              "embedding": [round(float(x), 6) for x in row]}))  # fmt: skip
    return 0

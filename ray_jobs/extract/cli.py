"""Bulk speaker-embedding extraction on Ray Data: ``python -m ray_jobs.extract``.

    python -m ray_jobs.extract --data-root /data/vox --checkpoint runs/campplus/model.pt \\
        --output emb/vox [--num-gpus 4] [--batch-size 64] [--format parquet|pkl] [--layout auto]
    python -m ray_jobs.extract --wav-scp data/wav.scp --utt2spk data/utt2spk --checkpoint ... \\
        --output ...

Reads the utterance list the arguments name, runs the Ray adapter ``ray_jobs/extract/job.py``
and prints the summary as JSON on stdout (logs on stderr). Rerunning the same command resumes;
a different checkpoint is refused. Exit status: 0 when something was embedded, 1 when nothing
was, 2 for bad arguments or input, 130 when interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from datasets.audio import AudioError
from datasets.manifests import (
    FILENAME_PATTERNS,
    TREE_LAYOUTS,
    ManifestError,
    Utterance,
    read_kaldi,
    scan_source,
)
from models.checkpoint import CheckpointError
from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.extract.job import extract
from ray_jobs.extract.output import FORMATS, ExtractError
from ray_jobs.output_lock import OutputLockedError

log = logging.getLogger("ray_jobs.extract.cli")


def collect(args: argparse.Namespace) -> list[Utterance]:
    """The utterance list named by the command-line source arguments."""
    if args.wav_scp or args.utt2spk:
        if not (args.wav_scp and args.utt2spk):
            raise ManifestError("--wav-scp and --utt2spk go together")
        return read_kaldi(
            Path(args.wav_scp).resolve(), Path(args.utt2spk).resolve(), args.dataset or "kaldi"
        )
    return scan_source(Path(args.data_root).resolve(), args.layout, dataset=args.dataset)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.extract",
        description="Resumable bulk speaker-embedding extraction on Ray Data.",
    )
    p.add_argument("--data-root", help="audio tree (dataset/speaker/utt or speaker/utt)")
    p.add_argument("--wav-scp", help="Kaldi wav.scp (with --utt2spk) instead of --data-root")
    p.add_argument("--utt2spk", help="Kaldi utt2spk, with --wav-scp")
    p.add_argument(
        "--layout", default="auto",
        help=f"with --data-root: {', '.join(TREE_LAYOUTS)} or a file-name pattern name "
        f"({', '.join(FILENAME_PATTERNS)})",
    )  # fmt: skip
    p.add_argument("--dataset", help="dataset name for --wav-scp or a file-name pattern")
    p.add_argument("--checkpoint", required=True, help="voxray speaker-model checkpoint")
    p.add_argument("--output", required=True, help="output folder (rerun to resume)")
    p.add_argument("--num-gpus", type=int, default=0, help="GPU model actors (0: CPU actors)")
    p.add_argument("--num-actors", type=int, default=1, help="CPU model actors when --num-gpus 0")
    p.add_argument(
        "--cpus-per-actor", type=float, default=1.0, help="CPUs (torch threads) per actor"
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per featurize/model batch")
    p.add_argument("--format", choices=FORMATS, default="parquet",
                   help="pkl: also write utterance_embeddings.pkl / speaker_embeddings.pkl "
                   "({key: {embedding, dataset, speaker_id, ...}}) for older pipelines")  # fmt: skip
    p.add_argument("--part-rows", type=int, default=1024, help="rows per resumable part file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    if bool(args.data_root) == bool(args.wav_scp):
        return user_error("give either --data-root or --wav-scp/--utt2spk")
    formats = ("parquet",) if args.format == "parquet" else ("parquet", "pkl")
    try:
        utts = collect(args)
        summary = extract(
            utts, args.checkpoint, args.output, formats=formats, batch_size=args.batch_size,
            num_gpus=args.num_gpus, num_actors=args.num_actors,
            cpus_per_actor=args.cpus_per_actor, part_rows=args.part_rows,
        )  # fmt: skip
    except KeyboardInterrupt:
        log.warning("interrupted: rerun the same command to resume")
        return 130
    except (
        AudioError, ManifestError, ExtractError, CheckpointError, FileNotFoundError,
        OutputLockedError,
    ) as exc:  # fmt: skip
        return user_error(exc)
    print(json.dumps(summary, indent=2))
    return 0 if summary["num_embedded"] else 1

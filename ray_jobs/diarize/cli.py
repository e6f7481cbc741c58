"""Batch speaker diarization on Ray Data: ``python -m ray_jobs.diarize``.

    python -m ray_jobs.diarize --input meetings/ --output out/diar --checkpoint runs/ecapa/model.pt \\
        [--num-speakers N | --min-speakers N --max-speakers N] [--reference-rttm ref/] \\
        [--uem all.uem] [--collar 0.25] [--set clustering.threshold=0.6] [--num-actors 2]

Lists the inputs, runs the Ray adapter ``ray_jobs/diarize/job.py`` and prints the summary as JSON
on stdout (logs on stderr). Exit codes: 0 all files diarized, 1 some failed (outputs still
written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json

from datasets.rttm import RTTMError
from models.checkpoint import CheckpointError
from models.config import ConfigError
from models.pipelines.diarize import diarization_config
from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.diarize.core import DiarizeJobError, list_inputs
from ray_jobs.diarize.job import diarize
from ray_jobs.output_lock import OutputLockedError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.diarize", description="Batch speaker diarization on Ray Data."
    )
    p.add_argument("--input", required=True, help="audio folder, audio file, or list of paths")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--checkpoint", help="voxray speaker-embedding checkpoint (required)")
    p.add_argument("--num-speakers", type=int, help="known number of speakers per file")
    p.add_argument("--min-speakers", type=int)
    p.add_argument("--max-speakers", type=int)
    p.add_argument("--reference-rttm", help="RTTM file or folder: write der.json and der.md")
    p.add_argument("--uem", help="UEM file of scored regions (with --reference-rttm)")
    p.add_argument("--collar", type=float, default=0.25, help="+- seconds around boundaries")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="DiarizationConfig override, e.g. clustering.threshold=0.6")  # fmt: skip
    p.add_argument("--num-actors", type=int, default=1, help="diarization actors")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (torch threads) each")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    if not args.checkpoint:
        return user_error(
            "--checkpoint is required: a voxray speaker-embedding checkpoint "
            "(train one with ray_jobs.train or import one with ray_jobs.import_checkpoint)"
        )
    try:
        cfg = diarization_config(args.overrides)
        rows = list_inputs(args.input)
        summary = diarize(
            rows, args.checkpoint, args.output, config=cfg, num_speakers=args.num_speakers,
            min_speakers=args.min_speakers, max_speakers=args.max_speakers,
            num_actors=args.num_actors, cpus_per_actor=args.cpus_per_actor,
            reference_rttm=args.reference_rttm, uem=args.uem, collar=args.collar,
        )  # fmt: skip
    except (
        DiarizeJobError, ConfigError, CheckpointError, RTTMError, FileNotFoundError,
        OutputLockedError,
    ) as exc:  # fmt: skip
        return user_error(exc)
    print(json.dumps(summary, indent=2))
    return 1 if summary["num_failed"] else 0

"""Speaker diarization: ``python -m ray_jobs.diarize``, in this process or as a Ray Data job.

    python -m ray_jobs.diarize meeting.wav [more.wav ...] [--checkpoint PATH|NAME] \\
        [--output out/diar [--reference-rttm ref.rttm]]
    python -m ray_jobs.diarize --input meetings/ --output out/diar --checkpoint runs/ecapa/model.pt \\
        [--num-speakers N | --min-speakers N --max-speakers N] [--reference-rttm ref/] \\
        [--uem all.uem] [--collar 0.25] [--set clustering.threshold=0.6] [--num-actors 2]

Audio files given as positional arguments select the local mode (``ray_jobs/diarize/local.py``:
no Ray cluster, no server): the RTTM of every file is printed on stdout, and with ``--output``
the batch job's files (RTTM, segments, timeline PNGs, DER) are written there too;
``--checkpoint`` defaults to ``pip:resemblyzer`` (offline). ``--input`` selects the batch job,
unchanged: it lists the inputs, runs the Ray adapter ``ray_jobs/diarize/job.py`` and prints the
summary as JSON on stdout. Both write ``plots/<uri>.png`` (who speaks when; reference rows above
the hypothesis with ``--reference-rttm``). Logs go to stderr. Exit codes: 0 all files
diarized, 1 some failed (outputs still written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from datasets.rttm import RTTMError
from models.checkpoint import CheckpointError
from models.config import ConfigError
from models.pipelines.diarize import diarization_config
from ray_jobs.cli import FIRST_TOUCH_MODEL, configure_cli_logging, user_error
from ray_jobs.diarize.core import DiarizeJobError, list_inputs
from ray_jobs.output_lock import OutputLockedError

log = logging.getLogger("ray_jobs.diarize.cli")

USER_ERRORS = (
    DiarizeJobError, ConfigError, CheckpointError, RTTMError, FileNotFoundError, OutputLockedError,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.diarize",
        description="Speaker diarization: audio files here (RTTM on stdout), or --input on Ray.",
    )
    p.add_argument("audio", nargs="*", help="audio files to diarize here, without Ray")
    p.add_argument("--input", help="batch job on Ray: audio folder, audio file, or list of paths")
    p.add_argument("--output", help="output folder (required with --input)")
    p.add_argument(
        "--checkpoint",
        help="speaker-embedding checkpoint or model name (required with --input; "
        f"default {FIRST_TOUCH_MODEL} for audio files)",
    )
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
    if args.audio and args.input:
        return user_error("give audio files (diarized here) or --input (a Ray job), not both")
    if args.audio:
        return _local(args)
    if not args.input or not args.output:
        return user_error(
            "give audio files (python -m ray_jobs.diarize meeting.wav) or --input and --output "
            "for the batch job on Ray"
        )
    if not args.checkpoint:
        return user_error(
            "--checkpoint is required: a voxray speaker-embedding checkpoint "
            "(train one with ray_jobs.train or import one with ray_jobs.import_checkpoint)"
        )
    from ray_jobs.diarize.job import diarize  # imports Ray: only the batch job needs it

    try:
        cfg = diarization_config(args.overrides)
        rows = list_inputs(args.input)
        summary = diarize(
            rows, args.checkpoint, args.output, config=cfg, num_speakers=args.num_speakers,
            min_speakers=args.min_speakers, max_speakers=args.max_speakers,
            num_actors=args.num_actors, cpus_per_actor=args.cpus_per_actor,
            reference_rttm=args.reference_rttm, uem=args.uem, collar=args.collar,
        )  # fmt: skip
    except USER_ERRORS as exc:
        return user_error(exc)
    print(json.dumps(summary, indent=2))
    return 1 if summary["num_failed"] else 0


def _local(args: argparse.Namespace) -> int:
    """Positional audio files: diarize here, RTTM on stdout (``ray_jobs/diarize/local.py``)."""
    from ray_jobs.diarize.local import diarize_local

    try:
        cfg = diarization_config(args.overrides)
        rows = []
        for path in args.audio:
            rows += list_inputs(path)
        uris = [r["uri"] for r in rows]
        if len(set(uris)) != len(uris):
            raise DiarizeJobError(f"two inputs share a file stem (the RTTM uri): {uris}")
        done, summary = diarize_local(
            rows, args.checkpoint or FIRST_TOUCH_MODEL, output=args.output, config=cfg,
            num_speakers=args.num_speakers, min_speakers=args.min_speakers,
            max_speakers=args.max_speakers, reference_rttm=args.reference_rttm, uem=args.uem,
            collar=args.collar,
        )  # fmt: skip
    except USER_ERRORS as exc:
        return user_error(exc)
    for row in done:
        if row["error"]:
            log.error("%s: %s", row["path"], row["error"])
        else:
            sys.stdout.write(row["rttm"])
    if args.output:
        log.info("outputs in %s: %s", args.output, json.dumps(summary))
    return 1 if summary["num_failed"] else 0

"""Batch speaker diarization on Ray Data: ``python -m ray_jobs.diarize``.

    python -m ray_jobs.diarize --input meetings/ --output out/diar --checkpoint runs/ecapa/model.pt \\
        [--num-speakers N | --min-speakers N --max-speakers N] [--reference-rttm ref/] \\
        [--uem all.uem] [--collar 0.25] [--set clustering.threshold=0.6] [--num-actors 2]

One row per audio file (``--input``: a folder, one file, or a list file of paths). The rows go
through ``map_batches`` with a callable class on an ``ActorPoolStrategy`` (the shape of Ray
Data's batch-inference examples): each actor builds the speaker embedder and the Silero VAD once
and diarizes whole files (``models.pipelines.diarize.Diarizer``). A file that cannot be decoded
or diarized becomes a failure row with its error; the others go on. The driver writes
``rttm/<uri>.rttm``, ``segments/<uri>.json`` and ``failures.json``, and with
``--reference-rttm`` a DER report (``der.json`` + ``der.md``, totals from summed seconds).
The uri is the file stem; inputs whose stems clash are refused (see ``diarize_core``).

The Ray-free parts (inputs, per-file work, outputs, scoring) live in ``ray_jobs/diarize_core.py``.
Exit codes: 0 all files diarized, 1 some failed (outputs still written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray

from datasets.ray_env import init_ray
from datasets.rttm import RTTMError
from models.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint
from models.config import ConfigError, to_dict
from models.pipelines.diarize import DiarizationConfig, Diarizer, diarization_config
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.diarize.core import (
    DiarizeJobError,
    diarize_rows,
    list_inputs,
    load_references,
    speaker_bounds,
    write_der,
    write_outputs,
)

log = logging.getLogger("ray_jobs.diarize.job")

COLUMNS = ("uri", "path", "error", "rttm", "result")


class DiarizeActor:
    """Ray Data callable class: one embedder + VAD per actor, built from a checkpoint dict (no
    file I/O for the model on the worker, so the checkpoint path need not exist on every node)."""

    def __init__(
        self,
        checkpoint: dict[str, Any],
        model_id: str,
        config: dict[str, Any],
        bounds: dict[str, int | None],
        threads: int = 1,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        embedder = SpeakerEmbedder(model_from_checkpoint(checkpoint), model_id=model_id)
        self.diarizer = Diarizer(embedder, cfg=diarization_config(base=config))
        self.bounds = bounds

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [{"uri": u, "path": p} for u, p in zip(batch["uri"], batch["path"], strict=True)]
        out = diarize_rows(self.diarizer, rows, **self.bounds)
        return {c: np.asarray([r[c] for r in out], dtype=object) for c in COLUMNS}


def diarize(
    rows: list[dict[str, str]],
    checkpoint: str | Path,
    output: str | Path,
    *,
    config: DiarizationConfig = DiarizationConfig(),
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    num_actors: int = 1,
    cpus_per_actor: float = 1.0,
    reference_rttm: str | Path | None = None,
    uem: str | Path | None = None,
    collar: float = 0.25,
) -> dict[str, Any]:
    """Diarize ``rows`` (from :func:`diarize_core.list_inputs`) on the Ray cluster into
    ``output``; returns the summary (counts, failures, and the DER totals with references)."""
    if not Path(checkpoint).is_file():
        raise DiarizeJobError(
            f"--checkpoint {checkpoint}: no such file; give a voxray speaker-model checkpoint "
            f"(this job never downloads models)"
        )
    bounds = speaker_bounds(num_speakers, min_speakers, max_speakers)
    if reference_rttm is not None:
        load_references(reference_rttm)  # a bad reference fails before the job, not after
    ckpt = read_checkpoint(checkpoint)
    model_id = SpeakerEmbedder.from_checkpoint(checkpoint).model_id
    init_ray()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    ds = ds.map_batches(
        DiarizeActor,
        fn_constructor_kwargs={
            "checkpoint": ckpt, "model_id": model_id, "config": to_dict(config),
            "bounds": bounds, "threads": max(1, int(cpus_per_actor)),
        },
        batch_size=1,  # one file per call: files differ in length, nothing to batch across
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, num_actors)),
        num_cpus=cpus_per_actor,
    )  # fmt: skip
    done = list(ds.iter_rows())
    summary = write_outputs(done, output)
    hyps = summary.pop("hypotheses")
    if reference_rttm is not None:
        report = write_der(output, hyps, reference_rttm, collar=collar, uem_path=uem)
        summary["der"] = report["total"]
    log.info("diarized %d files, %d failed", summary["num_diarized"], summary["num_failed"])
    return summary


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
    except (DiarizeJobError, ConfigError, CheckpointError, RTTMError, FileNotFoundError) as exc:
        return user_error(exc)
    print(json.dumps(summary, indent=2))
    return 1 if summary["num_failed"] else 0

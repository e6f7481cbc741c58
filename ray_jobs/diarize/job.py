"""The Ray adapter of batch speaker diarization (``python -m ray_jobs.diarize``, whose CLI is
``ray_jobs/diarize/cli.py``): :func:`diarize` on Ray Data.

One row per audio file (``--input``: a folder, one file, or a list file of paths). The rows go
through ``map_batches`` with a callable class on an ``ActorPoolStrategy`` (the shape of Ray
Data's batch-inference examples): each actor builds the speaker embedder and the Silero VAD once
and diarizes whole files (``models.pipelines.diarize.Diarizer``). A file that cannot be decoded
or diarized becomes a failure row with its error; the others go on. The driver writes
``rttm/<uri>.rttm``, ``segments/<uri>.json``, a timeline picture ``plots/<uri>.png`` (against
the reference when there is one) and ``failures.json``, and with
``--reference-rttm`` a DER report (``der.json`` + ``der.md``, totals from summed seconds).
The uri is the file stem; inputs whose stems clash are refused (see ``ray_jobs/diarize/core.py``).

The Ray-free parts (inputs, per-file work, outputs, scoring) live in ``ray_jobs/diarize/core.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray

from datasets import storage
from datasets.ray_data import init_ray
from models.checkpoint import read_checkpoint
from models.config import to_dict
from models.pipelines.diarize import DiarizationConfig, Diarizer, diarization_config
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.diarize.core import (
    diarization_model,
    diarize_rows,
    load_references,
    speaker_bounds,
    write_der,
    write_outputs,
)
from ray_jobs.output_lock import OutputLock
from ray_jobs.storage import check_output

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
        verification_threshold: float | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        embedder = SpeakerEmbedder.from_checkpoint_dict(checkpoint, model_id=model_id)
        self.diarizer = Diarizer(
            embedder,
            cfg=diarization_config(base=config),
            verification_threshold=verification_threshold,
        )
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
    ``output``; returns the summary (counts, failures, and the DER totals with references).
    Holds ``output``'s lock (``ray_jobs/output_lock.py``): a second job there is refused."""
    check_output(output)  # a local folder on a multi-node cluster is refused before any work
    with OutputLock(output):
        return _diarize(
            rows, checkpoint, output, config=config, num_speakers=num_speakers,
            min_speakers=min_speakers, max_speakers=max_speakers, num_actors=num_actors,
            cpus_per_actor=cpus_per_actor, reference_rttm=reference_rttm, uem=uem, collar=collar,
        )  # fmt: skip


def _diarize(
    rows: list[dict[str, str]],
    checkpoint: str | Path,
    output: str | Path,
    *,
    config: DiarizationConfig,
    num_speakers: int | None,
    min_speakers: int | None,
    max_speakers: int | None,
    num_actors: int,
    cpus_per_actor: float,
    reference_rttm: str | Path | None,
    uem: str | Path | None,
    collar: float,
) -> dict[str, Any]:
    # a file, a URI or a published model by name (fetched once, here in the driver)
    checkpoint, embedder, t_eer = diarization_model(checkpoint)
    bounds = speaker_bounds(num_speakers, min_speakers, max_speakers)
    # a bad reference fails before the job, not after
    refs = load_references(reference_rttm) if reference_rttm is not None else None
    ckpt = read_checkpoint(checkpoint)
    model_id = embedder.model_id
    init_ray()
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    ds = ds.map_batches(
        DiarizeActor,
        fn_constructor_kwargs={
            "checkpoint": ckpt, "model_id": model_id, "config": to_dict(config),
            "bounds": bounds, "threads": max(1, int(cpus_per_actor)),
            "verification_threshold": t_eer,
        },
        batch_size=1,  # one file per call: files differ in length, nothing to batch across
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, num_actors)),
        num_cpus=cpus_per_actor,
    )  # fmt: skip
    done = list(ds.iter_rows())
    with storage.staged_output(output) as out:  # a URI's files are uploaded when all are written
        summary = write_outputs(done, out, refs)
        hyps = summary.pop("hypotheses")
        if reference_rttm is not None:
            report = write_der(out, hyps, reference_rttm, collar=collar, uem_path=uem)
            summary["der"] = report["total"]
    log.info("diarized %d files, %d failed", summary["num_diarized"], summary["num_failed"])
    return summary

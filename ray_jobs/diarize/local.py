"""Diarize a few files in this process, without Ray (``python -m ray_jobs.diarize meeting.wav``).

The first-touch path: the same ``Diarizer`` (VAD, window embeddings, clustering,
resegmentation), per-file work, outputs and DER scoring as the batch job (all from
``ray_jobs/diarize/core.py``), run in a plain loop instead of a Ray Data actor pool. The batch
job (``--input DIR --output DIR``, ``ray_jobs/diarize/job.py``) is for many files on a cluster.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from models.pipelines.diarize import DiarizationConfig, Diarizer
from ray_jobs.diarize.core import (
    DiarizeJobError,
    diarization_model,
    diarize_rows,
    load_references,
    speaker_bounds,
    write_der,
    write_outputs,
)

log = logging.getLogger("ray_jobs.diarize.local")


def diarize_local(
    rows: list[dict[str, str]],
    checkpoint: str | Path,
    *,
    output: str | Path | None = None,
    config: DiarizationConfig = DiarizationConfig(),
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    reference_rttm: str | Path | None = None,
    uem: str | Path | None = None,
    collar: float = 0.25,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Diarize ``rows`` (``core.list_inputs``) here -> ``(rows with "rttm"/"error", summary)``.

    With ``output`` the batch job's files are written there (``rttm/``, ``segments/``,
    ``plots/<uri>.png`` timelines, ``failures.json``, and ``der.json``/``der.md`` with
    ``reference_rttm``); without it nothing is written and the caller prints the RTTM.
    """
    bounds = speaker_bounds(num_speakers, min_speakers, max_speakers)
    if reference_rttm is not None and output is None:
        raise DiarizeJobError("--reference-rttm needs --output (where der.json and plots go)")
    refs = load_references(reference_rttm) if reference_rttm is not None else None
    _, embedder, t_eer = diarization_model(checkpoint)
    diarizer = Diarizer(embedder, cfg=config, verification_threshold=t_eer)
    done = diarize_rows(diarizer, rows, **bounds)
    failed = [r for r in done if r["error"]]
    summary: dict[str, Any] = {"num_diarized": len(done) - len(failed), "num_failed": len(failed)}
    if output is not None:
        summary = write_outputs(done, output, refs)
        hyps = summary.pop("hypotheses")
        if reference_rttm is not None:
            summary["der"] = write_der(output, hyps, reference_rttm, collar=collar, uem_path=uem)[
                "total"
            ]
    log.info("diarized %d files, %d failed", summary["num_diarized"], summary["num_failed"])
    return done, summary

"""Score-normalisation cohorts from files: a matrix of other speakers' embeddings.

AS-norm (``models.pipelines.scoring.as_norm``) needs embeddings of speakers who are in no trial.
The natural source is the output of an extraction job (``ray_jobs.extract``): its
``speakers.parquet`` (one centroid per speaker) or ``utterances.parquet`` (one row per
utterance), both with an ``embedding`` column; a ``.npy`` ``(C, D)`` matrix works too. Rows come
back L2-normalised (what ``scoring.cohort_stats`` expects). Used by ``ray_jobs.evaluate
--cohort`` and by the service (``AppArgs.cohort``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from models.pipelines.scoring import l2_normalise


class CohortError(ValueError):
    """The cohort file is missing, unreadable or not an embedding matrix."""


def load_cohort(path: str | os.PathLike, embed_dim: int | None = None) -> np.ndarray:
    """``speakers.parquet`` / ``utterances.parquet`` / ``.npy`` -> ``(C, D)`` float32 unit rows.

    ``embed_dim`` (the model's) is checked when given: a cohort of another model's embeddings
    would normalise scores with meaningless statistics.
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(
            f"cohort {path} does not exist; give the speakers.parquet of an extraction job "
            "(python -m ray_jobs.extract) over speakers disjoint from the trials, or a .npy matrix"
        )
    if path.suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CohortError(f"{path} is not a readable .npy matrix: {exc}") from exc
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["embedding"])
        except Exception as exc:  # pyarrow raises several types for bad files
            raise CohortError(
                f"{path} has no readable 'embedding' column (expected ray_jobs.extract's "
                f"speakers.parquet or utterances.parquet): {exc}"
            ) from exc
        try:
            x = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise CohortError(f"{path}: embeddings are not equal-length vectors: {exc}") from exc
    else:
        raise CohortError(f"cohort {path}: use a .parquet (ray_jobs.extract output) or .npy file")
    if x.ndim != 2 or x.shape[0] < 2:
        raise CohortError(f"cohort {path} must be a (C, D) matrix with C >= 2, got {x.shape}")
    if not np.isfinite(x).all():
        raise CohortError(f"cohort {path} contains NaN or infinite values")
    if embed_dim is not None and x.shape[1] != embed_dim:
        raise CohortError(
            f"cohort {path} holds {x.shape[1]}-dim embeddings but the model's are {embed_dim}-dim: "
            "extract the cohort with the same model"
        )
    return l2_normalise(x, dtype=np.float32)

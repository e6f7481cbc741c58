"""Persistence of bulk extraction: part files, the output folder's state, final outputs.

Split from ``ray_jobs/extract/core.py`` (which plans, featurizes and embeds):

- :class:`PartStore`: finished rows persisted as parquet part files under ``OUT/parts/``
  (temp file + rename, so a crash never leaves half a part), which is what makes a rerun resume;
- :func:`open_output`: binds an output folder to one model and refuses another;
- :func:`finalize`: parts -> ``utterances.parquet``, ``speakers.parquet`` (mean of normalised
  utterance embeddings, re-normalised), JSON lists, ``failures.json``, ``summary.json`` and,
  for older pipelines (``--format pkl``), ``utterance_embeddings.pkl`` /
  ``speaker_embeddings.pkl``: ``{key: {"embedding": (D,) float32, metadata...}}`` (see
  :data:`PKL_UTTERANCE_FIELDS`); ``summary.json`` carries their ``total_utterances``,
  ``total_speakers``, ``embedding_dimension`` and the per-dataset breakdown (``datasets``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasets import storage
from datasets.manifests import Utterance
from models.checkpoint import atomic_write
from models.pipelines.scoring import centroid

log = logging.getLogger("ray_jobs.extract.job")

FORMAT = "voxray.extract/1"
STATE_FILE = "extract_state.json"
PARTS_DIR = "parts"
FORMATS = ("parquet", "pkl")
META_COLUMNS = ("key", "dataset", "speaker_id", "utterance_id", "path")
# ``--format pkl``: the structure older pipelines' loading code expects, exactly:
# utterance_embeddings.pkl {dataset_speaker_utterance: {"embedding", *PKL_UTTERANCE_FIELDS}},
# speaker_embeddings.pkl {dataset_speaker: {"embedding", *PKL_SPEAKER_FIELDS}}; embeddings are
# (D,) float32 numpy arrays, the other values str / int.
PKL_UTTERANCE_FIELDS = ("dataset", "speaker_id", "utterance_id", "path")
PKL_SPEAKER_FIELDS = ("dataset", "speaker_id", "num_utterances")


Batch = dict[str, np.ndarray]


class ExtractError(ValueError):
    """An extraction the user asked for that cannot run as asked; the message says what to do."""


def _str_array(values: Iterable[Any]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


# ---------------------------------------------------------------------------------------------
# Persistence


def _write_json(path: Path, obj: Any) -> Path:
    return atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


def _embedding_array(emb: np.ndarray) -> pa.Array:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, d = emb.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(emb.reshape(-1)))  # list<float32>


def _embeddings(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return column.flatten().to_numpy().astype(np.float32).reshape(len(column), dim)


PART_SCHEMA = pa.schema(
    [("key", pa.string()), ("dataset", pa.string()), ("speaker_id", pa.string()),
     ("utterance_id", pa.string()), ("path", pa.string()), ("duration", pa.float64()),
     ("embedding", pa.list_(pa.float32())), ("error", pa.string())]
)  # fmt: skip


class PartStore:
    """Parquet part files under ``out/parts``: the incremental, crash-safe record of finished rows.

    Each part holds whole rows (with their keys) and the ``model_id`` in its schema metadata;
    it appears under its final name only when complete (temp file + rename). Successful keys
    are skipped by a rerun; failed ones are retried (a transient error may have passed).
    With ``remote`` (the ``parts`` folder of a URI output) every part is also uploaded as soon
    as it is written, so a rerun on another node, which pulls them first, resumes from it.
    """

    def __init__(self, out_dir: str | Path, model_id: str, remote: str | None = None) -> None:
        self.dir = Path(out_dir) / PARTS_DIR
        self.model_id = model_id
        self.remote = remote
        self._seq = 0
        self._run = f"{time.time_ns():020d}-{os.getpid()}"

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []

    def clean_tmp(self) -> int:
        """Delete temp files left by a crashed writer; returns how many."""
        stale = list(self.dir.glob(".part-*.tmp")) if self.dir.is_dir() else []
        for p in stale:
            p.unlink()
        return len(stale)

    def write(self, batch: Batch) -> Path:
        """Persist one embedded batch (the columns of :data:`PART_SCHEMA`)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cols = [pa.array([str(v) for v in batch[c]], pa.string()) for c in META_COLUMNS]
        cols.append(pa.array(np.asarray(batch["duration"], dtype=np.float64)))
        cols.append(_embedding_array(np.asarray(batch["embedding"])))
        cols.append(pa.array([str(v) for v in batch["error"]], pa.string()))
        schema = PART_SCHEMA.with_metadata({"model_id": self.model_id, "format": FORMAT})
        table = pa.Table.from_arrays(cols, schema=schema)
        path = self.dir / f"part-{self._run}-{self._seq:06d}.parquet"
        self._seq += 1
        atomic_write(path, lambda p: pq.write_table(table, p))
        if self.remote:
            storage.upload_file(path, storage.join(self.remote, path.name))
        return path

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """All parts, oldest first; a part written by another model raises ExtractError."""
        tables = []
        for p in self.parts():
            meta = pq.read_schema(p).metadata or {}
            got = meta.get(b"model_id", b"").decode()
            if got != self.model_id:
                raise ExtractError(
                    f"{p} holds embeddings of model {got!r}, not {self.model_id!r}; one output "
                    f"folder holds one model: use another --output"
                )
            tables.append(pq.read_table(p, columns=columns).replace_schema_metadata(None))
        schema = (
            PART_SCHEMA if columns is None else pa.schema([PART_SCHEMA.field(c) for c in columns])
        )
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def done_keys(self) -> set[str]:
        t = self.read(["key", "error"])
        return {
            k for k, e in zip(t["key"].to_pylist(), t["error"].to_pylist(), strict=True) if not e
        }


@dataclass(frozen=True)
class OutputState:
    """What an output folder was made with (``extract_state.json``); reruns must match it."""

    model_id: str
    embed_dim: int
    fbank: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT


def open_output(out_dir: str | Path, state: OutputState) -> Path:
    """Create ``out_dir`` or check that it was made by the same model; writes the state file.

    Raises ExtractError when ``out_dir`` holds results of another model (its state file, or a
    ``summary.json`` from an older run, names a different ``model_id``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, "summary.json"):
        p = out / name
        if p.is_file():
            try:
                found = json.loads(p.read_text()).get("model_id")
            except (OSError, ValueError) as exc:
                raise ExtractError(
                    f"{p} is unreadable ({exc}); delete it or use another --output"
                ) from exc
            if found is not None and found != state.model_id:
                raise ExtractError(
                    f"{out} already holds embeddings of model {found!r}, but the checkpoint is "
                    f"{state.model_id!r}; embeddings of two models must not be mixed: use another "
                    f"--output (or delete {out} to start over)"
                )
    _write_json(out / STATE_FILE, asdict(state))
    return out


# ---------------------------------------------------------------------------------------------
# Aggregation and final outputs


def aggregate_speakers(
    datasets: Sequence[str], speakers: Sequence[str], embeddings: np.ndarray
) -> tuple[list[tuple[str, str, int]], np.ndarray]:
    """Per ``(dataset, speaker)``: the mean of L2-normalised utterance embeddings, re-normalised.

    Returns ``([(dataset, speaker_id, num_utterances), ...] sorted, (S, D) float32)``.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (d, s) in enumerate(zip(datasets, speakers, strict=True)):
        groups.setdefault((str(d), str(s)), []).append(i)
    names = sorted(groups)
    out = np.zeros((len(names), emb.shape[1] if emb.ndim == 2 else 0), dtype=np.float32)
    for j, name in enumerate(names):
        out[j] = centroid(emb[groups[name]])
    return [(d, s, len(groups[(d, s)])) for d, s in names], out


def _select_rows(table: pa.Table, keys: Sequence[str]) -> tuple[list[int], dict[str, int]]:
    """Row index per manifest key: a success if there is one, else the newest failure."""
    wanted = set(keys)
    best: dict[str, int] = {}
    ok: dict[str, bool] = {}
    for i, (k, e) in enumerate(
        zip(table["key"].to_pylist(), table["error"].to_pylist(), strict=True)
    ):
        if k not in wanted or ok.get(k, False):
            continue
        best[k], ok[k] = i, not e
    good = sorted(k for k in best if ok[k])
    failed = {k: best[k] for k in best if not ok[k]}
    return [best[k] for k in good], failed


def finalize(
    out_dir: str | Path,
    utterances: Sequence[Utterance],
    store: PartStore,
    embed_dim: int,
    *,
    formats: Sequence[str] = ("parquet",),
    wall_seconds: float = 0.0,
    processed: int = 0,
) -> dict[str, Any]:
    """Merge the parts into the final outputs (rows sorted by key, so the result does not depend
    on how often the job was interrupted). Only keys of ``utterances`` are written. Returns the
    summary (also written to ``summary.json``)."""
    out = Path(out_dir)
    table = store.read()
    keys = [u.key for u in utterances]
    good_idx, failed_idx = _select_rows(table, keys)
    good = table.take(pa.array(good_idx, pa.int64()))
    by_key = {u.key: u for u in utterances}
    failures = [
        {"key": k, "path": by_key[k].path, "error": table["error"][i].as_py()}
        for k, i in failed_idx.items()
    ]
    done = set(good["key"].to_pylist()) | set(failed_idx)
    failures += [
        {"key": k, "path": by_key[k].path, "error": "missing from the pipeline output; rerun"}
        for k in keys if k not in done
    ]  # fmt: skip
    failures.sort(key=lambda f: f["key"])

    emb = _embeddings(good["embedding"], embed_dim)
    utt_table = pa.table(
        {"key": good["key"], "dataset": good["dataset"], "speaker_id": good["speaker_id"],
         "utterance_id": good["utterance_id"], "path": good["path"],
         "duration": good["duration"], "embedding": _embedding_array(emb)}
    )  # fmt: skip
    spk_names, spk_emb = aggregate_speakers(
        good["dataset"].to_pylist(), good["speaker_id"].to_pylist(), emb
    )
    spk_keys = [f"{d}_{s}" for d, s, _ in spk_names]
    spk_table = pa.table(
        {"key": pa.array(spk_keys, pa.string()),
         "dataset": pa.array([d for d, _, _ in spk_names], pa.string()),
         "speaker_id": pa.array([s for _, s, _ in spk_names], pa.string()),
         "num_utterances": pa.array([n for _, _, n in spk_names], pa.int64()),
         "embedding": _embedding_array(spk_emb)}
    )  # fmt: skip
    atomic_write(out / "utterances.parquet", lambda p: pq.write_table(utt_table, p))
    atomic_write(out / "speakers.parquet", lambda p: pq.write_table(spk_table, p))
    utt_list = utt_table.drop_columns(["embedding"]).to_pylist()
    spk_list = spk_table.drop_columns(["embedding"]).to_pylist()
    _write_json(out / "utterance_list.json", utt_list)
    _write_json(out / "speaker_list.json", spk_list)
    _write_json(out / "failures.json", failures)
    if "pkl" in formats:
        utt_obj = {
            row["key"]: {"embedding": emb[i].copy(), **{k: row[k] for k in PKL_UTTERANCE_FIELDS}}
            for i, row in enumerate(utt_list)
        }
        spk_obj = {
            row["key"]: {"embedding": spk_emb[i].copy(), **{k: row[k] for k in PKL_SPEAKER_FIELDS}}
            for i, row in enumerate(spk_list)
        }
        for name, obj in (("utterance", utt_obj), ("speaker", spk_obj)):
            atomic_write(
                out / f"{name}_embeddings.pkl",
                lambda p, obj=obj: p.write_bytes(pickle.dumps(obj, protocol=4)),
            )

    per_ds: dict[str, dict[str, Any]] = {}
    for u in utterances:
        d = per_ds.setdefault(u.dataset, {"utterances": 0, "embedded": 0, "failed": 0,
                                          "speakers": 0, "audio_seconds": 0.0})  # fmt: skip
        d["utterances"] += 1
    for row in utt_list:
        per_ds[row["dataset"]]["embedded"] += 1
        per_ds[row["dataset"]]["audio_seconds"] += row["duration"]
    for f in failures:
        per_ds[by_key[f["key"]].dataset]["failed"] += 1
    for row in spk_list:
        per_ds[row["dataset"]]["speakers"] += 1
    for d in per_ds.values():
        d["audio_seconds"] = round(d["audio_seconds"], 3)
    summary = {
        "format": FORMAT,
        "model_id": store.model_id,
        "embed_dim": int(embed_dim),
        "num_utterances": len(keys),
        "num_embedded": len(utt_list),
        "num_failed": len(failures),
        "num_speakers": len(spk_list),
        # the names loading code of older bulk-extraction outputs reads (beside ours above)
        "total_utterances": len(utt_list),
        "total_speakers": len(spk_list),
        "embedding_dimension": int(embed_dim),
        "audio_seconds": round(sum(d["audio_seconds"] for d in per_ds.values()), 3),
        "datasets": dict(sorted(per_ds.items())),
        "processed_this_run": int(processed),
        "resumed_from_parts": len(keys) - int(processed),
        "wall_seconds": round(float(wall_seconds), 3),
        "utterances_per_s": round(processed / wall_seconds, 3) if wall_seconds > 0 else None,
        "outputs": sorted(
            ["utterances.parquet", "speakers.parquet"]
            + (
                [f"{n}_embeddings.pkl" for n in ("utterance", "speaker")]
                if "pkl" in formats
                else []
            )
        ),  # fmt: skip
    }
    _write_json(out / "summary.json", summary)
    return summary

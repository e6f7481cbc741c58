"""Ray-free core of bulk speaker-embedding extraction (``ray_jobs/extract.py`` is the Ray glue).

Everything that can be tested without a cluster lives here, as plain functions over numpy
batches (``dict[str, np.ndarray]``, Ray Data's ``batch_format="numpy"``):

- :func:`plan_rows`: manifest -> rows still to do, sorted by duration (read from the headers),
  so consecutive rows, hence Ray Data blocks and model batches, have near-equal lengths;
- :func:`featurize_rows`: decode, resample and fbank each row; a file that cannot be used
  becomes a row with an ``error`` message, never an exception;
- :func:`embed_rows`: fbank rows -> L2-normalised embeddings. Rows are batched through the
  model only with rows of the *same number of frames* (the rule of
  ``SpeakerEmbedder.embed_batch``), so no padding or cropping reaches the pooling and each
  embedding equals ``SpeakerEmbedder.embed`` of the same file up to float reordering in batched
  kernels: tolerance 0 in exact arithmetic, ``|diff| <= 1e-5`` in float32 (tests check it);
- :class:`PartStore`: finished rows persisted as parquet part files under ``OUT/parts/``
  (temp file + rename, so a crash never leaves half a part), which is what makes a rerun resume;
- :func:`finalize`: parts -> ``utterances.parquet``, ``speakers.parquet`` (mean of normalised
  utterance embeddings, re-normalised), JSON lists, ``failures.json``, ``summary.json`` and,
  for older pipelines, pickled ``{key: np.ndarray}`` dicts;
- :func:`run_extraction`: the driver loop (resume bookkeeping, progress logging) over any
  ``stream`` of embedded batches: Ray Data's in ``extract.py``, :func:`local_stream` in tests;
- :func:`extract_baseline`: the plain single-process loop (``load_audio`` -> ``embed``) used as
  the reference in tests and the benchmark.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from datasets.audio import audio_info, load_audio
from datasets.manifests import Utterance
from models.features import Fbank, FbankConfig, min_samples
from models.pipelines.speaker import SpeakerEmbedder

log = logging.getLogger("ray_jobs.extract")

FORMAT = "voxray.extract/1"
STATE_FILE = "extract_state.json"
PARTS_DIR = "parts"
FORMATS = ("parquet", "pkl")
META_COLUMNS = ("key", "dataset", "speaker_id", "utterance_id", "path")
Batch = dict[str, np.ndarray]
Stream = Callable[[list[dict[str, Any]]], Iterable[Batch]]


class ExtractError(ValueError):
    """An extraction the user asked for that cannot run as asked; the message says what to do."""


def _str_array(values: Iterable[Any]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


# ---------------------------------------------------------------------------------------------
# Planning


def manifest_rows(utterances: Sequence[Utterance]) -> list[dict[str, Any]]:
    """Utterances -> plain rows (what Ray Data's ``from_items`` takes)."""
    return [
        {"key": u.key, "dataset": u.dataset, "speaker_id": u.speaker,
         "utterance_id": u.utterance, "path": str(u.path)}
        for u in utterances
    ]  # fmt: skip


def _header_seconds(path: str) -> float:
    try:
        return audio_info(path)[2]
    except Exception:  # unreadable: featurize_rows reports why; sort it first, it is cheap
        return -1.0


def plan_rows(
    utterances: Sequence[Utterance], done: set[str] | frozenset[str] = frozenset(), workers: int = 8
) -> list[dict[str, Any]]:
    """Rows not in ``done``, sorted by ``(header duration, key)``.

    The sort is what makes length-aware batching work: rows of near-equal length travel
    together, so rows with identical frame counts meet in one model batch. Headers are read
    with a small thread pool (I/O bound); unreadable files sort first with duration -1.
    """
    rows = [r for r in manifest_rows(utterances) if r["key"] not in done]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        seconds = list(pool.map(_header_seconds, [r["path"] for r in rows]))
    for r, s in zip(rows, seconds, strict=True):
        r["header_seconds"] = float(s)
    rows.sort(key=lambda r: (r["header_seconds"], r["key"]))
    return rows


# ---------------------------------------------------------------------------------------------
# Featurization (CPU tasks) and embedding (model actors)


def featurize_wav(wav: np.ndarray, cfg: FbankConfig, min_seconds: float = 0.0) -> np.ndarray:
    """``wav: (T,) float32 at cfg.sample_rate`` -> fbank ``(frames, num_mel_bins)`` float32.

    The same checks and front end as ``SpeakerEmbedder.embed``; raises ``ValueError`` with the
    reason for audio the embedder would reject.
    """
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    if x.dim() != 1:
        raise ValueError(f"expected mono audio (T,), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("empty waveform")
    if not torch.isfinite(x).all():
        raise ValueError("waveform contains NaN or infinite samples")
    seconds = x.numel() / cfg.sample_rate
    if seconds < min_seconds:
        raise ValueError(f"audio is {seconds:.3f} s long; at least {min_seconds:g} s needed")
    if x.numel() < min_samples(cfg):
        raise ValueError(
            f"audio is {seconds * 1000:.1f} ms long, shorter than one {cfg.frame_length:g} ms frame"
        )
    with torch.inference_mode():
        return Fbank(cfg)(x.unsqueeze(0))[0].numpy()  # (frames, mels)


def featurize_rows(batch: Batch, fbank: FbankConfig, min_seconds: float = 0.0) -> Batch:
    """Manifest rows -> rows with ``feats`` ``(frames, mels)``, ``num_frames``, ``duration``
    (seconds after resampling) and ``error`` ("" when fine). Never raises for a bad file: its
    row carries ``feats`` of shape ``(0, mels)`` and the error message."""
    n = len(batch["key"])
    feats, frames, durations, errors = [], [], [], []
    for i in range(n):
        try:
            wav, sr = load_audio(str(batch["path"][i]), target_sr=fbank.sample_rate)
            f = featurize_wav(wav, fbank, min_seconds)
            feats.append(f)
            frames.append(f.shape[0])
            durations.append(wav.shape[-1] / sr)
            errors.append("")
        except Exception as exc:  # a bad file is data, not a crash: report it in failures.json
            feats.append(np.zeros((0, fbank.num_mel_bins), dtype=np.float32))
            frames.append(0)
            durations.append(0.0)
            errors.append(f"{type(exc).__name__}: {exc}")
    out = {c: _str_array(batch[c]) for c in META_COLUMNS}
    arr = np.empty(n, dtype=object)  # ragged (frames differ): one array per row
    arr[:] = feats
    out.update(
        feats=arr,
        num_frames=np.asarray(frames, dtype=np.int64),
        duration=np.asarray(durations, dtype=np.float64),
        error=_str_array(errors),
    )
    return out


def frame_groups(frames: np.ndarray, max_batch_frames: int) -> list[np.ndarray]:
    """Indices of rows grouped by identical frame count (rows with 0 frames are left out),
    each group split so that ``len(group) * frames <= max_batch_frames`` (at least one row)."""
    frames = np.asarray(frames)
    groups = []
    for t in np.unique(frames):
        if t <= 0:
            continue
        idx = np.flatnonzero(frames == t)
        cap = max(1, int(max_batch_frames) // int(t))
        groups.extend(idx[s : s + cap] for s in range(0, len(idx), cap))
    return groups


def embed_rows(embedder: SpeakerEmbedder, batch: Batch) -> Batch:
    """Featurized rows -> ``embedding (N, D) float32`` (zeros on error rows) + metadata.

    Exact length-aware batching: only rows with equal frame counts share a forward pass (see
    the module docstring for the tolerance). A non-finite embedding becomes an error row.
    """
    n = len(batch["key"])
    frames = np.asarray(batch["num_frames"], dtype=np.int64)
    errors = [str(e) for e in batch["error"]]
    emb = np.zeros((n, embedder.embed_dim), dtype=np.float32)
    for idx in frame_groups(frames, embedder.max_batch_frames):
        feats = torch.from_numpy(np.stack([np.asarray(batch["feats"][i]) for i in idx]))
        emb[idx] = embedder.embed_feats(feats).cpu().numpy()  # (b, D)
    for i in np.flatnonzero(~np.isfinite(emb).all(axis=1)):
        emb[i] = 0.0
        errors[i] = f"the model produced a non-finite embedding from {frames[i]} frames"
    out = {c: _str_array(batch[c]) for c in META_COLUMNS}
    out.update(
        duration=np.asarray(batch["duration"], dtype=np.float64),
        embedding=emb,
        error=_str_array(errors),
    )
    return out


def local_stream(
    embedder: SpeakerEmbedder, batch_size: int = 32, min_seconds: float = 0.0
) -> Stream:
    """The Ray pipeline's stages run in this process: the reference stream for tests."""

    def stream(rows: list[dict[str, Any]]) -> Iterator[Batch]:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            batch = {c: _str_array(r[c] for r in chunk) for c in META_COLUMNS}
            yield embed_rows(embedder, featurize_rows(batch, embedder.fbank_cfg, min_seconds))

    return stream


# ---------------------------------------------------------------------------------------------
# Persistence


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _write_json(path: Path, obj: Any) -> Path:
    return _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2) + "\n"))


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
    """

    def __init__(self, out_dir: str | Path, model_id: str) -> None:
        self.dir = Path(out_dir) / PARTS_DIR
        self.model_id = model_id
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
        return _atomic_write(path, lambda p: pq.write_table(table, p))

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
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (d, s) in enumerate(zip(datasets, speakers, strict=True)):
        groups.setdefault((str(d), str(s)), []).append(i)
    names = sorted(groups)
    out = np.zeros((len(names), emb.shape[1] if emb.ndim == 2 else 0), dtype=np.float32)
    for j, name in enumerate(names):
        mean = emb[groups[name]].mean(axis=0)
        out[j] = mean / max(np.linalg.norm(mean), 1e-12)
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
    _atomic_write(out / "utterances.parquet", lambda p: pq.write_table(utt_table, p))
    _atomic_write(out / "speakers.parquet", lambda p: pq.write_table(spk_table, p))
    utt_list = utt_table.drop_columns(["embedding"]).to_pylist()
    spk_list = spk_table.drop_columns(["embedding"]).to_pylist()
    _write_json(out / "utterance_list.json", utt_list)
    _write_json(out / "speaker_list.json", spk_list)
    _write_json(out / "failures.json", failures)
    if "pkl" in formats:
        utt_keys = utt_table["key"].to_pylist()
        for name, ks, e in (("utterance", utt_keys, emb), ("speaker", spk_keys, spk_emb)):
            obj = {k: e[i].copy() for i, k in enumerate(ks)}
            _atomic_write(
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


# ---------------------------------------------------------------------------------------------
# Driver loop


def run_extraction(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    state: OutputState,
    stream: Stream,
    *,
    formats: Sequence[str] = ("parquet",),
    part_rows: int = 1024,
    part_seconds: float = 60.0,
    log_every: float = 10.0,
) -> dict[str, Any]:
    """Embed every utterance not already in ``out_dir``'s parts, then write the final outputs.

    ``stream(rows)`` yields embedded batches (:func:`embed_rows`' columns) for the planned rows.
    Batches are buffered into parts of about ``part_rows`` rows or ``part_seconds`` seconds, so
    an interruption loses at most that much work. Returns the summary.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExtractError(f"unknown output format(s) {unknown}; use {list(FORMATS)}")
    if not utterances:
        raise ExtractError("no utterances to extract; check --data-root / --wav-scp")
    t0 = time.perf_counter()
    out = open_output(out_dir, state)
    store = PartStore(out, state.model_id)
    if store.clean_tmp():
        log.info("removed temp files of an interrupted run in %s", store.dir)
    done = store.done_keys() & {u.key for u in utterances}
    rows = plan_rows(utterances, done)
    log.info(
        "%d utterances: %d already done in %s, %d to embed with %s",
        len(utterances), len(done), store.dir, len(rows), state.model_id,
    )  # fmt: skip
    processed = failed = 0
    buffer: list[Batch] = []
    last_write = last_log = time.perf_counter()

    def flush() -> None:
        nonlocal last_write
        if buffer:
            store.write({c: np.concatenate([b[c] for b in buffer]) for c in PART_SCHEMA.names})
            buffer.clear()
        last_write = time.perf_counter()

    try:
        if rows:
            for batch in stream(rows):
                buffer.append(batch)
                processed += len(batch["key"])
                failed += sum(1 for e in batch["error"] if e)
                now = time.perf_counter()
                if (
                    sum(len(b["key"]) for b in buffer) >= part_rows
                    or now - last_write >= part_seconds
                ):
                    flush()
                if now - last_log >= log_every:
                    rate = processed / max(now - t0, 1e-9)
                    log.info(
                        "embedded %d / %d (%d failed), %.1f utt/s",
                        processed,
                        len(rows),
                        failed,
                        rate,
                    )
                    last_log = now
        flush()
    except BaseException:  # Ctrl-C, a dead cluster...: keep what is finished, then re-raise
        flush()
        log.warning(
            "interrupted after %d of %d utterances; finished work is saved in %s: rerun the same "
            "command to resume", processed, len(rows), store.dir,
        )  # fmt: skip
        raise
    summary = finalize(
        out, utterances, store, state.embed_dim, formats=formats,
        wall_seconds=time.perf_counter() - t0, processed=processed,
    )  # fmt: skip
    log.info(
        "done: %d embedded, %d failed, %d speakers in %.1f s (%s utt/s this run) -> %s",
        summary["num_embedded"], summary["num_failed"], summary["num_speakers"],
        summary["wall_seconds"], summary["utterances_per_s"], out,
    )  # fmt: skip
    return summary


# ---------------------------------------------------------------------------------------------
# Baseline


@dataclass
class BaselineResult:
    embeddings: dict[str, np.ndarray]  # key -> (D,) float32, unit norm
    failures: dict[str, str]  # key -> error message


def extract_baseline(utterances: Sequence[Utterance], embedder: SpeakerEmbedder) -> BaselineResult:
    """The plain loop: ``load_audio`` -> ``SpeakerEmbedder.embed``, one file at a time."""
    result = BaselineResult({}, {})
    for u in utterances:
        try:
            wav, sr = load_audio(u.path, target_sr=embedder.sample_rate)
            result.embeddings[u.key] = embedder.embed(wav, sr)
        except ValueError as exc:  # AudioError / AudioInputError
            result.failures[u.key] = f"{type(exc).__name__}: {exc}"
    return result

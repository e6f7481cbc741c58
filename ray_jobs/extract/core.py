"""Ray-free core of bulk speaker-embedding extraction (``ray_jobs/extract/job.py`` is the Ray glue).

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
- persistence (part files, the output folder's model binding, final outputs) lives in
  ``ray_jobs/extract/output.py``;
- :func:`run_extraction`: the driver loop (resume bookkeeping, progress logging) over any
  ``stream`` of embedded batches: Ray Data's in ``extract.py``, :func:`local_stream` in tests;
- :func:`extract_baseline`: the plain single-process loop (``load_audio`` -> ``embed``) used as
  the reference in tests and the benchmark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets import storage
from datasets.audio import audio_info, load_audio
from datasets.manifests import Utterance
from models.features import FrontEndConfig, front_end
from models.pipelines.speaker import SpeakerEmbedder, embedder_input
from ray_jobs.extract.output import (
    FORMATS,
    META_COLUMNS,
    PART_SCHEMA,
    PARTS_DIR,
    Batch,
    ExtractError,
    OutputState,
    PartStore,
    _str_array,
    finalize,
    open_output,
)
from ray_jobs.output_lock import OutputLock

log = logging.getLogger("ray_jobs.extract.job")

Stream = Callable[[list[dict[str, Any]]], Iterable[Batch]]


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


def featurize_wav(wav: np.ndarray, cfg: FrontEndConfig, min_seconds: float = 0.0) -> np.ndarray:
    """``wav: (T,) float32 at cfg.sample_rate`` -> features ``(frames, num_mel_bins)`` float32.

    The same checks (``embedder_input``) and front end as ``SpeakerEmbedder.embed``; raises
    ``AudioError`` (a ``ValueError``) with the reason for audio the embedder would reject.
    """
    x = embedder_input(wav, cfg.sample_rate, cfg, min_seconds)
    with torch.inference_mode():
        return front_end(cfg)(x.unsqueeze(0))[0].numpy()  # (frames, mels)


def featurize_rows(batch: Batch, fbank: FrontEndConfig, min_seconds: float = 0.0) -> Batch:
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
    remote: str | None = None,
) -> dict[str, Any]:
    """Embed every utterance not already in ``out_dir``'s parts, then write the final outputs.

    ``stream(rows)`` yields embedded batches (:func:`embed_rows`' columns) for the planned rows.
    Batches are buffered into parts of about ``part_rows`` rows or ``part_seconds`` seconds, so
    an interruption loses at most that much work. With ``remote`` (the URI ``out_dir`` stages)
    each part is uploaded there as soon as it is written. Returns the summary.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExtractError(f"unknown output format(s) {unknown}; use {list(FORMATS)}")
    if not utterances:
        raise ExtractError("no utterances to extract; check --data-root / --wav-scp")
    with OutputLock(out_dir):  # a second job on the same folder is refused while this runs
        return _run_extraction(
            utterances, out_dir, state, stream, formats=formats, part_rows=part_rows,
            part_seconds=part_seconds, log_every=log_every, remote=remote,
        )  # fmt: skip


def _run_extraction(
    utterances: Sequence[Utterance],
    out_dir: str | Path,
    state: OutputState,
    stream: Stream,
    *,
    formats: Sequence[str],
    part_rows: int,
    part_seconds: float,
    log_every: float,
    remote: str | None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = open_output(out_dir, state)
    store = PartStore(out, state.model_id, storage.join(remote, PARTS_DIR) if remote else None)
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
        except ValueError as exc:  # AudioError
            result.failures[u.key] = f"{type(exc).__name__}: {exc}"
    return result

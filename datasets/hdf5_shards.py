"""Packing utterances into HDF5 shards, and reading them back.

Millions of small audio files are slow to list and open on network storage, and decoding MP3 or
resampling on every epoch wastes CPU, so training reads packed shards instead (the approach of
WeSpeaker's shard lists and of the 3D-Speaker / Kaldi ``wav.ark`` archives, with HDF5 as the
container). Layout of ``out_dir``::

    shard-00000.h5      one HDF5 dataset per utterance, named by its key; audio already
    shard-00001.h5      mono and at ``sample_rate``: int16 PCM (speech, noise) or float32 (rir);
    ...                 attrs speaker / dataset / utterance / sample_rate / path; file attr
                        ``rows``: the keys in row order
    manifest.json       {"format": "voxray.shards/1", "kind", "sample_rate", "order", "shards", ...}

Row order is speaker-interleaved (``order: "interleaved"``, :func:`interleave_speakers`): each
speaker's utterances are spread evenly over the corpus under a seed, so every shard, and every
run of consecutive rows in it, holds as many different speakers as the corpus allows; a
speaker-sorted order would give shards of a dozen speakers and batches to match. Packs from
before this order (no ``order`` in the manifest, or ``order_seed=None``) read as ``"sorted"``;
``datasets.shard_order`` still mixes them, row by row.

Shard assignment is a pure function of the utterance list and the order seed, and each shard is
written to a temporary file that is renamed when complete, so an interrupted run (Ctrl-C,
preemption) can be rerun: finished shards are kept and the result is byte-identical to an
uninterrupted run (a sorted pack from an older version is a different plan: it is rewritten).
Files that fail to decode are listed under ``failures`` in the manifest instead of aborting.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from tqdm import tqdm

from datasets.audio import AudioError, load_audio
from datasets.manifests import Utterance

log = logging.getLogger(__name__)

FORMAT = "voxray.shards/1"
MANIFEST_NAME = "manifest.json"
Kind = Literal["speech", "noise", "rir"]
_SHARD_RE = re.compile(r"^shard-\d{5}\.h5$")


class ShardError(ValueError):
    """A shard folder or manifest that cannot be used; the message says what to do."""


def _to_storage(wav: np.ndarray, kind: str) -> np.ndarray:
    if kind == "rir":
        return wav.astype(np.float32)
    # Same scaling as soundfile's PCM_16 reader, so 16-bit sources round-trip exactly.
    return np.clip(np.round(wav * 32768.0), -32768, 32767).astype(np.int16)


def from_storage(data: np.ndarray) -> np.ndarray:
    """Stored samples (int16 PCM or float32) -> float32 in [-1, 1]."""
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    return data.astype(np.float32, copy=False)


def shard_rows(f: h5py.File) -> list[str]:
    """The utterance keys of an open shard in row order (key order for packs older than the
    ``rows`` attribute)."""
    if "rows" in f.attrs:
        return json.loads(str(f.attrs["rows"]))
    return sorted(f.keys())


def interleave_speakers(utts: list[Utterance], seed: int) -> list[Utterance]:
    """A seeded order that spreads each speaker's utterances evenly over the list.

    Speaker ``s`` with ``n`` utterances (in a random order) puts its ``j``-th at a random point
    of the ``j``-th of ``n`` equal strata of ``[0, 1)`` (jittered stratification); sorting by
    position interleaves the speakers, so a speaker's utterances sit about ``N / n`` rows
    apart, never more than ``2 N / n``, and a run of consecutive rows holds as many speakers
    as it has rows until it nears that spacing. Every stratum's order is drawn afresh, so no two
    runs of rows repeat the same speakers.
    """
    rng = np.random.default_rng([int(seed), 0x5B1D])
    by_speaker: dict[str, list[Utterance]] = defaultdict(list)
    for u in sorted(utts, key=lambda u: u.key):
        by_speaker[u.speaker].append(u)
    placed = []
    for spk in sorted(by_speaker):
        group = by_speaker[spk]
        n = len(group)
        jitter = rng.random(n)
        for j, i in enumerate(rng.permutation(n)):
            placed.append(((j + jitter[j]) / n, group[i].key, group[i]))
    placed.sort(key=lambda t: t[:2])
    return [u for _, _, u in placed]


def plan_shards(
    utts: list[Utterance], utts_per_shard: int, order_seed: int | None = 0
) -> list[list[Utterance]]:
    """The utterances of each shard, in row order: key order, speaker-interleaved under
    ``order_seed`` (``None``: left in key order), cut every ``utts_per_shard`` rows."""
    utts = sorted(utts, key=lambda u: u.key)
    if order_seed is not None:
        utts = interleave_speakers(utts, order_seed)
    return [utts[i : i + utts_per_shard] for i in range(0, len(utts), utts_per_shard)]


def _shard_summary(path: Path) -> dict[str, Any]:
    """Per-utterance metadata (in row order) and recorded failures of a finished shard."""
    with h5py.File(path, "r") as f:
        sr = int(f.attrs["sample_rate"])
        utts = [
            {
                "key": key,
                "speaker": str(f[key].attrs["speaker"]),
                "dataset": str(f[key].attrs["dataset"]),
                "duration": f[key].shape[0] / sr,
            }
            for key in shard_rows(f)
        ]
        failures = json.loads(str(f.attrs["failures"]))
    return {"utterances": utts, "failures": failures}


def _shard_is_done(path: Path, keys: list[str], sample_rate: int, kind: str) -> bool:
    """A finished shard from an earlier run with this exact plan (same keys, rate and kind)."""
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs["sample_rate"]) != sample_rate or str(f.attrs["kind"]) != kind:
                return False
            planned = json.loads(str(f.attrs["planned_keys"]))
    except (OSError, KeyError, ValueError):
        return False
    return planned == keys


def _write_shard(
    path: Path, utts: list[Utterance], sample_rate: int, kind: str, pbar: tqdm | None = None
) -> dict[str, Any]:
    tmp = path.with_name(path.name + ".partial")
    failures = []
    rows = []
    # track_times=False and a fixed insertion order keep the bytes reproducible.
    with h5py.File(tmp, "w", libver="earliest") as f:
        f.attrs["format"] = FORMAT
        f.attrs["kind"] = kind
        f.attrs["sample_rate"] = sample_rate
        f.attrs["planned_keys"] = json.dumps([u.key for u in utts])
        for u in utts:
            try:
                wav, _ = load_audio(u.path, sample_rate, mono=True)
            except AudioError as exc:
                log.warning("skipping %s: %s", u.key, exc)
                failures.append({"key": u.key, "path": u.path, "error": str(exc)})
            else:
                d = f.create_dataset(u.key, data=_to_storage(wav, kind), track_times=False)
                d.attrs["speaker"] = u.speaker
                d.attrs["dataset"] = u.dataset
                d.attrs["utterance"] = u.utterance
                d.attrs["sample_rate"] = sample_rate
                d.attrs["path"] = u.path
                rows.append(u.key)
            if pbar is not None:
                pbar.update(1)
        f.attrs["failures"] = json.dumps(failures)
        f.attrs["rows"] = json.dumps(rows)
    os.replace(tmp, path)
    return _shard_summary(path)


def _write_shard_job(args: tuple) -> dict[str, Any]:
    return _write_shard(*args)


def pack_shards(
    utts: list[Utterance],
    out_dir: str | Path,
    *,
    sample_rate: int = 16000,
    kind: Kind = "speech",
    utts_per_shard: int = 256,
    resume: bool = True,
    progress: bool = True,
    workers: int = 1,
    order_seed: int | None = 0,
) -> Path:
    """Pack ``utts`` into ``out_dir/shard-NNNNN.h5`` + ``manifest.json``; returns the manifest path.

    Audio is decoded, down-mixed and resampled to ``sample_rate`` once, here. Rows are in the
    speaker-interleaved order of :func:`interleave_speakers` under ``order_seed`` (``None``: key
    order, as older versions packed). With ``resume`` (default) shards finished by an earlier
    run of the same plan are kept; ``resume=False`` rewrites everything. ``workers > 1`` writes
    shards in that many processes.
    """
    if kind not in ("speech", "noise", "rir"):
        raise ShardError(f"kind must be speech, noise or rir, got {kind!r}")
    if utts_per_shard < 1:
        raise ShardError(f"utts_per_shard must be >= 1, got {utts_per_shard}")
    if not utts:
        raise ShardError("nothing to pack: the utterance list is empty")
    utts = sorted(utts, key=lambda u: u.key)
    keys = [u.key for u in utts]
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in zip(keys, keys[1:], strict=False) if k == n)
        raise ShardError(f"duplicate utterance key {dup!r}; keys must be unique to pack")
    bad = [k for k in keys if "/" in k or k in (".", "")]
    if bad:
        raise ShardError(f"utterance key {bad[0]!r} cannot name an HDF5 dataset (contains '/')")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chunks = plan_shards(utts, utts_per_shard, order_seed)
    names = [f"shard-{i:05d}.h5" for i in range(len(chunks))]

    # Leftovers from other plans would confuse anyone globbing the folder.
    for p in out.iterdir():
        if p.name.endswith(".h5.partial") or (_SHARD_RE.match(p.name) and p.name not in names):
            log.info("removing stale %s", p)
            p.unlink()
    (out / MANIFEST_NAME).unlink(missing_ok=True)

    summaries: dict[int, dict[str, Any]] = {}
    todo = []
    for i, (name, chunk) in enumerate(zip(names, chunks, strict=True)):
        path = out / name
        if (
            resume
            and path.exists()
            and _shard_is_done(path, [u.key for u in chunk], sample_rate, kind)
        ):
            summaries[i] = _shard_summary(path)
        else:
            todo.append(i)
    done_utts = sum(len(chunks[i]) for i in summaries)
    if summaries:
        log.info("resuming: %d of %d shards already packed", len(summaries), len(chunks))
    log.info(
        "packing %d utterances into %d shards (%s, %d Hz) in %s",
        len(utts),
        len(chunks),
        kind,
        sample_rate,
        out,
    )
    with tqdm(
        total=len(utts), initial=done_utts, disable=not progress, unit="utt", desc="pack"
    ) as pbar:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                summaries[i] = _write_shard(out / names[i], chunks[i], sample_rate, kind, pbar)
        else:
            jobs = [(out / names[i], chunks[i], sample_rate, kind) for i in todo]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, summary in zip(todo, pool.map(_write_shard_job, jobs), strict=True):
                    summaries[i] = summary
                    pbar.update(len(chunks[i]))

    shards, entries, failures = [], [], []
    for i, name in enumerate(names):
        s = summaries[i]
        seconds = sum(u["duration"] for u in s["utterances"])
        shards.append(
            {"path": name, "num_utterances": len(s["utterances"]), "seconds": round(seconds, 3)}
        )
        entries.extend(
            {**u, "shard": name, "duration": round(u["duration"], 4)} for u in s["utterances"]
        )
        failures.extend(s["failures"])
    manifest = {
        "format": FORMAT,
        "kind": kind,
        "sample_rate": sample_rate,
        "order": "sorted" if order_seed is None else "interleaved",
        "order_seed": order_seed,
        "shards": shards,
        "speakers": sorted({u["speaker"] for u in entries}),
        "utterances": entries,
        "num_utterances": len(entries),
        "total_seconds": round(sum(s["seconds"] for s in shards), 3),
        "failures": failures,
    }
    path = out / MANIFEST_NAME
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info(
        "packed %d utterances (%.1f h, %d speakers) into %d shards; %d failures",
        len(entries),
        manifest["total_seconds"] / 3600,
        len(manifest["speakers"]),
        len(shards),
        len(failures),
    )
    return path


class ShardFiles:
    """Read-only h5py handles of shard files, opened on first use in each process.

    Handles do not pickle and must not cross a fork, so they are dropped in ``__getstate__``
    and reopened after a fork: an object holding this can be shipped to Ray workers.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = list(paths)
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    @classmethod
    def of_manifest(cls, manifest_path: str | Path) -> ShardFiles:
        """The shards listed in a manifest (file or folder)."""
        return cls(shard_paths(manifest_path))

    def __len__(self) -> int:
        return len(self.paths)

    def rows(self, i: int) -> list[str]:
        """Keys of shard ``i`` in row order."""
        return shard_rows(self[i])

    def read(self, i: int, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of utterance ``key`` of shard ``i`` as float32."""
        return from_storage(self[i][key][start:stop])

    def __getitem__(self, i: int) -> h5py.File:
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(i)
        if f is None:
            try:
                f = self._files[i] = h5py.File(self.paths[i], "r")
            except OSError as exc:
                raise ShardError(
                    f"{self.paths[i]} is not a readable HDF5 shard ({exc}); repack it"
                ) from exc
        return f

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # reopened lazily by the receiver
        return state


def _manifest_file(path_or_dir: str | Path) -> Path:
    p = Path(path_or_dir)
    return p / MANIFEST_NAME if p.is_dir() else p


def load_manifest(path_or_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``manifest.json`` (or the one inside a folder)."""
    path = _manifest_file(path_or_dir)
    if not path.is_file():
        raise ShardError(
            f"no shard manifest at {path}; pack the data first (python -m ray_jobs.pack ...) "
            f"or rerun an interrupted pack to finish it"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ShardError(f"{path} is not valid JSON ({exc}); rerun the pack job") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ShardError(f"{path}: format {found!r} is not {FORMAT!r}; repack with this version")
    required = ("kind", "sample_rate", "shards", "speakers", "utterances", "failures")
    missing = [k for k in required if k not in manifest]
    if missing:
        raise ShardError(f"{path}: manifest lacks {missing}; rerun the pack job")
    return manifest


def shard_paths(manifest_path: str | Path) -> list[str]:
    """Absolute paths of the shards listed in a manifest (file or folder)."""
    path = _manifest_file(manifest_path)
    manifest = load_manifest(path)
    root = path.resolve().parent
    paths = [str(root / s["path"]) for s in manifest["shards"]]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ShardError(f"{len(missing)} shard(s) listed in {path} are missing, e.g. {missing[0]}")
    return paths


def iter_shard(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield ``{"key", "speaker", "dataset", "audio": float32 (T,), "sample_rate"}`` per utterance,
    in row order."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ShardError(f"{path} is not a readable HDF5 shard ({exc}); repack it") from exc
    with f:
        for key in shard_rows(f):
            d = f[key]
            yield {
                "key": key,
                "speaker": str(d.attrs["speaker"]),
                "dataset": str(d.attrs["dataset"]),
                "audio": from_storage(d[()]),
                "sample_rate": int(d.attrs["sample_rate"]),
            }


def read_all(manifest_path: str | Path) -> list[dict[str, Any]]:
    """Every utterance of a (small) packed set, e.g. a noise or RIR bank, in manifest order."""
    return [row for p in shard_paths(manifest_path) for row in iter_shard(p)]

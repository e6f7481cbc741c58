"""Noise and RIR banks: entries read on demand, so a worker's memory stays flat as a bank grows.

Full MUSAN is about 25 GB of float32; loading it into every Ray worker that augments or mixes
does not scale. A :class:`ShardBank` reads a packed bank (``python -m ray_jobs.pack --kind noise``
or ``--kind rir``; ``datasets.hdf5_shards``) through h5py: it keeps only an index (shard, key,
length per entry) and reads the samples one use needs, a random crop of a noise or one whole
RIR, straight from the contiguous HDF5 dataset, so the operating system's page cache, not the
worker's heap, holds what is hot. A :class:`MemoryBank` holds arrays (small banks, tests, a
folder of audio files given to a one-process tool). :func:`open_bank` opens either;
training jobs pack a folder once (``ray_jobs.train.prepare.prepare_bank``) and hand workers
the manifest. Both pickle small, so they can be shipped to Ray workers. Ray-free.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from datasets.audio import AudioError, crop_or_pad, load_audio
from datasets.hdf5_shards import MANIFEST_NAME, ShardFiles, load_manifest
from models.waveform import resample

log = logging.getLogger(__name__)

_RESAMPLE_PAD = 64  # source samples read beyond a crop so the resampling filter sees context


class Bank(ABC):
    """Float32 mono signals at ``sample_rate``, indexed ``0..len-1``, read on request."""

    sample_rate: int | None = None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def length(self, i: int) -> int:
        """Samples of entry ``i``."""

    @abstractmethod
    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of entry ``i``: ``(stop - start,)`` float32."""

    def load(self, i: int) -> np.ndarray:
        """Entry ``i`` whole (an RIR; a noise only when it is short)."""
        return self.read(i, 0, self.length(i))

    def crop(self, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of entry ``i``: exactly ``crop_or_pad(load(i), n, rng)`` (same draws
        from ``rng``), but a longer entry reads only the crop."""
        length = self.length(i)
        if length > n:
            start = int(rng.integers(0, length - n + 1))
            return self.read(i, start, start + n)
        return crop_or_pad(self.load(i), n, rng)


class MemoryBank(Bank):
    """A bank of in-memory arrays; empty ones are dropped."""

    def __init__(self, signals: list[np.ndarray], sample_rate: int | None = None) -> None:
        self.sample_rate = sample_rate
        self._signals = [
            np.asarray(x, dtype=np.float32).reshape(-1) for x in signals if np.size(x) > 0
        ]

    def __len__(self) -> int:
        return len(self._signals)

    def length(self, i: int) -> int:
        return int(self._signals[i].shape[0])

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        return self._signals[i][start:stop].copy()

    def load(self, i: int) -> np.ndarray:
        return self._signals[i]


class ShardBank(Bank):
    """A packed bank read lazily from its HDF5 shards (module docstring).

    Entries are resampled on read when the pack's rate is not ``sample_rate`` (pack at the
    training rate to avoid that cost: training jobs do). Zero-length entries are skipped.
    """

    def __init__(self, manifest_path: str | Path, sample_rate: int | None = None) -> None:
        manifest = load_manifest(manifest_path)
        self.packed_rate = int(manifest["sample_rate"])
        self.sample_rate = sample_rate or self.packed_rate
        self._files = ShardFiles.of_manifest(manifest_path)
        self._where: list[tuple[int, str]] = []  # entry -> (shard index, key)
        lengths = []
        for s in range(len(self._files)):
            for key in self._files.rows(s):
                n = int(self._files[s][key].shape[0])
                if n > 0:
                    self._where.append((s, key))
                    lengths.append(n)
        self._files.close()  # the driver that checks the bank may never read it
        self._lengths = np.asarray(lengths, dtype=np.int64)  # at the packed rate
        if self.sample_rate != self.packed_rate:
            log.warning(
                "%s is packed at %d Hz, used at %d Hz: every read is resampled; repack it at "
                "%d Hz (python -m ray_jobs.pack --sample-rate %d)",
                manifest_path,
                self.packed_rate,
                self.sample_rate,
                self.sample_rate,
                self.sample_rate,
            )

    def __len__(self) -> int:
        return len(self._where)

    @property
    def stored_samples(self) -> int:
        """Samples the bank holds on disk (all entries, at the packed rate)."""
        return int(self._lengths.sum())

    def length(self, i: int) -> int:
        n = int(self._lengths[i])
        if self.sample_rate == self.packed_rate:
            return n
        return int(round(n * self.sample_rate / self.packed_rate))

    def _raw(self, i: int, start: int, stop: int) -> np.ndarray:
        s, key = self._where[i]
        return self._files.read(s, key, start, stop)

    def read(self, i: int, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop <= self.length(i):
            raise IndexError(f"[{start}, {stop}) is outside entry {i} of {self.length(i)} samples")
        if self.sample_rate == self.packed_rate:
            return self._raw(i, start, stop)
        src, dst = self.packed_rate, self.sample_rate
        a = max(0, start * src // dst - _RESAMPLE_PAD)
        b = min(int(self._lengths[i]), -(-stop * src // dst) + _RESAMPLE_PAD)
        y = resample(self._raw(i, a, b), src, dst)
        off = start - a * dst // src
        out = y[off : off + stop - start]
        return np.pad(out, (0, stop - start - out.shape[0])).astype(np.float32, copy=False)

    def close(self) -> None:
        self._files.close()


def is_packed(path: str | Path) -> bool:
    """A shard manifest (``manifest.json``) or a folder holding one."""
    p = Path(path)
    return (p.is_file() and p.suffix == ".json") or (p.is_dir() and (p / MANIFEST_NAME).is_file())


def open_bank(path: str | Path, sample_rate: int, *, in_memory: bool = False) -> Bank:
    """The noise or RIR bank at ``path`` at ``sample_rate``.

    A packed manifest (file or folder) opens as a :class:`ShardBank`, read on demand
    (``in_memory=True`` reads it whole instead). A folder of audio files (recursive) is decoded
    into a :class:`MemoryBank`: fine for a one-process tool and a small bank; for training,
    pack it (training jobs do, once). Undecodable files are skipped with a warning.
    """
    from datasets.manifests import scan_files

    p = Path(path)
    if is_packed(p):
        bank: Bank = ShardBank(p, sample_rate)
        if in_memory:
            bank = MemoryBank([bank.load(i) for i in range(len(bank))], sample_rate)
    elif p.is_dir():
        signals = []
        for u in scan_files(p):
            try:
                signals.append(load_audio(u.path, sample_rate)[0])
            except AudioError as exc:
                log.warning("bank %s: skipping %s", p, exc)
        bank = MemoryBank(signals, sample_rate)
        mb = sum(x.nbytes for x in signals) / 2**20
        log.info("bank %s: %d files decoded into memory (%.0f MB)", p, len(bank), mb)
    else:
        raise AudioError(f"{p}: not a folder of audio files nor a shard manifest")
    if not len(bank):
        raise AudioError(f"{p}: the bank is empty; point it at noise/RIR audio files")
    return bank


def as_bank(bank: Bank | list[np.ndarray] | None) -> Bank:
    """A bank from a bank, a list of arrays, or None (empty)."""
    if isinstance(bank, Bank):
        return bank
    return MemoryBank(list(bank or []))

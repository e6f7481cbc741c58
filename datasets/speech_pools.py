"""Speech pools for dynamic mixing: speakers, their utterance keys and the audio per key.

:class:`MemoryPool` holds arrays (tests, small held-out sets); :class:`ShardPool` reads packed
HDF5 shards (``datasets.hdf5_shards``) lazily and only the samples a mixture needs, and pickles
without its file handles so it can be shipped to Ray workers. :func:`speaker_split` splits the
speakers into disjoint training and held-out pools. Ray-free.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from pathlib import Path

import numpy as np

from datasets.hdf5_shards import ShardError, ShardFiles, load_manifest
from datasets.manifests import Utterance, split_speakers
from datasets.mixing_config import MixingError


class SpeechPool(ABC):
    """Speakers, their utterance keys, and float32 mono audio at ``sample_rate`` per key."""

    sample_rate: int | None = None  # Hz of the stored audio when known (checked by the mixer)

    @property
    @abstractmethod
    def speakers(self) -> list[str]: ...

    @abstractmethod
    def utterances(self, speaker: str) -> list[str]: ...

    @abstractmethod
    def load(self, key: str) -> np.ndarray:
        """Whole utterance ``(N,)`` float32."""

    def num_samples(self, key: str) -> int:
        return int(self.load(key).shape[0])

    def load_span(self, key: str, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of an utterance; pools that can read partially override it."""
        return self.load(key)[start:stop]


class MemoryPool(SpeechPool):
    """In-memory pool ``{speaker: [wav (N,), ...]}`` (tests, small sets); keys are ``spk#i``."""

    def __init__(self, data: dict[str, list[np.ndarray]], sample_rate: int | None = None) -> None:
        self.sample_rate = sample_rate
        self._audio: dict[str, np.ndarray] = {}
        self._keys: dict[str, list[str]] = {}
        for spk, wavs in data.items():
            if not wavs:
                raise MixingError(f"speaker {spk!r} has no utterances; drop it from the pool")
            self._keys[spk] = []
            for i, w in enumerate(wavs):
                w = np.ascontiguousarray(w, dtype=np.float32)
                if w.ndim != 1 or w.size == 0:
                    raise MixingError(f"speaker {spk!r} utterance {i}: need non-empty (N,) audio")
                key = f"{spk}#{i}"
                self._audio[key] = w
                self._keys[spk].append(key)

    @property
    def speakers(self) -> list[str]:
        return list(self._keys)

    def utterances(self, speaker: str) -> list[str]:
        return self._keys[speaker]

    def load(self, key: str) -> np.ndarray:
        return self._audio[key]

    def num_samples(self, key: str) -> int:
        return int(self._audio[key].shape[0])


class ShardPool(SpeechPool):
    """Speech read lazily from packed HDF5 shards (``datasets.hdf5_shards``).

    The index (key -> shard, length; speaker -> keys) is built once from the shard files' keys
    and attributes. HDF5 handles are opened on first read in each process and dropped when the
    object is pickled or used after a fork (:class:`~datasets.hdf5_shards.ShardFiles`), so it
    can be shipped to Ray workers. Only the samples a mixture needs are read (HDF5 slicing). ``speakers`` restricts the
    pool (e.g. to the training or held-out side of :func:`speaker_split`). ``sample_rate``, when
    given, must equal the packed rate: resampling in the mixing hot path would cost more than the
    mixing, so a mismatch raises and asks to repack at the training rate.
    """

    def __init__(
        self,
        manifest_path: str | Path,
        speakers: list[str] | None = None,
        sample_rate: int | None = None,
    ) -> None:
        manifest = load_manifest(manifest_path)
        if manifest["kind"] != "speech":
            raise ShardError(f"{manifest_path} holds {manifest['kind']!r}, not speech shards")
        self.sample_rate = int(manifest["sample_rate"])
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ShardError(
                f"{manifest_path} is packed at {self.sample_rate} Hz but mixing runs at "
                f"{sample_rate} Hz; repack it: python -m ray_jobs.pack ... --sample-rate "
                f"{sample_rate}"
            )
        self._files = ShardFiles.of_manifest(manifest_path)
        wanted = None if speakers is None else set(speakers)
        self._where: dict[str, tuple[int, int]] = {}  # key -> (shard index, samples)
        self._keys: dict[str, list[str]] = defaultdict(list)
        for i in range(len(self._files)):
            f = self._files[i]
            if int(f.attrs["sample_rate"]) != self.sample_rate:
                raise ShardError(f"{f.filename} disagrees with its manifest's rate; repack it")
            for key in sorted(self._files.rows(i)):
                spk = str(f[key].attrs["speaker"])
                if wanted is None or spk in wanted:
                    self._where[key] = (i, int(f[key].shape[0]))
                    self._keys[spk].append(key)
        self._files.close()  # the driver that builds the index may never read audio
        self._keys = dict(sorted(self._keys.items()))
        if wanted is not None and wanted - set(self._keys):
            missing = sorted(wanted - set(self._keys))
            raise ShardError(
                f"{len(missing)} requested speaker(s) not in the shards, e.g. {missing[0]}"
            )

    @property
    def speakers(self) -> list[str]:
        return list(self._keys)

    def utterances(self, speaker: str) -> list[str]:
        return self._keys[speaker]

    def num_samples(self, key: str) -> int:
        return self._where[key][1]

    def load_span(self, key: str, start: int, stop: int) -> np.ndarray:
        return self._files.read(self._where[key][0], key, start, stop)

    def load(self, key: str) -> np.ndarray:
        return self.load_span(key, 0, self.num_samples(key))

    def close(self) -> None:
        self._files.close()


def speaker_split(
    speakers: list[str], val: float | int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train, val)`` speaker lists, disjoint; the same split as
    :func:`datasets.manifests.split_speakers` gives for utterances of these speakers."""
    if len(set(speakers)) != len(speakers):
        raise MixingError("speaker list has duplicates; pass each speaker once")
    utts = [Utterance(s, "", "", s, s) for s in speakers]
    train, held = split_speakers(utts, val, seed)
    return [u.speaker for u in train], [u.speaker for u in held]

"""Dynamic mixing for target speaker extraction (TSE) at 48 kHz: seeded, on the fly, Ray-free.

Every training sample is a fresh mixture drawn from a seed, the "dynamic mixing" of Wavesplit
(Zeghidour & Grangier, 2021) as used by SpeechBrain's LibriMix/WHAMR recipes
(``recipes/*/separation/dynamic_mixing.py``), with the TSE additions of SpeakerBeam
(Zmolikova et al., 2019) and USEF-TSE (Zeng et al., 2024): a reference (enrolment) utterance of
the target speaker and target-absent samples. Noise and room acoustics follow the DNS Challenge
synthesiser (Reddy et al., 2020, microsoft/DNS-Challenge ``noisyspeech_synthesizer``).

Per sample (:meth:`DynamicMixer.mix`): a target speaker and utterance; a reference that is a
different utterance of the same speaker (or, for a speaker with a single utterance, a
non-overlapping part of it: the utterance is cut in two, the reference taking up to
``ref_seconds`` but at most half from its start or end, the target the rest; the reference
gets the target's speed factor, since a speed-perturbed voice is another voice); 1-3 (config)
interferers of other speakers at a per-interferer SIR; each source speed-perturbed, convolved with its own RIR
(its own position in the room) over its full extent and only then cropped to the segment, so
reverberation tails from speech before the crop are right; noise at an SNR relative to the
speech mixture; a random overall level and a joint peak limit.

Training target = the target convolved with the RIR truncated ``early_reflection_ms`` (50 ms)
after the direct-path peak (the first arrival within 6 dB of the RIR's maximum). The model should remove late reverberation, which smears speech and
hurts intelligibility, but not early reflections: these fuse perceptually with the direct sound
(the 50 ms boundary of the D50/C50 clarity measures) and are physically unrecoverable from a
single channel, so asking for the dry source makes the task ill-posed and yields over-suppressed
outputs. Early-reverberant targets are the common choice of reverberant enhancement and TSE
training (DNS Challenge systems, SpeakerBeam and USEF-TSE on reverberant mixtures).

Levels are measured on the cropped, reverberant signals that actually enter the mixture, so the
realised SIR/SNR reported in ``info`` equal the drawn ones. Speed perturbation and RIR convolution
are computed only over the span the segment needs (the perturbed span equals the matching part
of the whole utterance's perturbation; the convolution's crop equals that of the full one).
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.fft
from scipy.signal import resample_poly

from datasets.audio import crop_or_pad
from datasets.hdf5_shards import ShardError, load_manifest, shard_paths
from datasets.manifests import Utterance, split_speakers

log = logging.getLogger(__name__)

_SALT = 0x7E5E  # separates the mixer's random stream from other users of the same seed
_EVAL_SALT = 0xE7A1
_EPS = 1e-12  # power below which a signal counts as silent
_SPEED_STEP = 100  # speed factors are multiples of 1/100: short polyphase filters
_SPECTRUM_CACHE = 64  # RIR spectra kept per mixer (about 1 MB each at 48 kHz)


class MixingError(ValueError):
    """A speech pool or bank that cannot be mixed as configured; the message says what to do."""


def _check_range(name: str, value: tuple[float, float], lo: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value}")
    if lo is not None and value[0] <= lo:
        raise ValueError(f"{name} must be above {lo}, got {value}")


@dataclass(frozen=True)
class MixConfig:
    sample_rate: int = 48000  # Hz of the speech pool, banks and every output
    segment_seconds: float = 4.0  # mixture and target length
    ref_seconds: float = 4.0  # reference crop; shorter references are used whole, zero-padded
    min_ref_seconds: float = 0.5  # shortest reference cut from a speaker's only utterance
    target_absent_prob: float = 0.2  # mixtures without the target (target = zeros)
    min_interferers: int = 1  # other speakers per mixture, drawn uniformly in [min, max]
    max_interferers: int = 3
    sir_db: tuple[float, float] = (-5.0, 5.0)  # target-to-each-interferer level, per interferer
    snr_db: tuple[float, float] = (-5.0, 15.0)  # speech mixture to noise
    rir_prob: float = 1.0  # sample is reverberant; each source then gets its own RIR
    early_reflection_ms: float = 50.0  # target keeps direct path + this much (module docstring)
    speed_prob: float = 0.5  # each source independently speed-perturbed with this probability
    speed_range: tuple[float, float] = (0.9, 1.1)  # factor drawn uniformly, rounded to 0.01
    ref_noisy_prob_start: float = 0.0  # P(reference gets noise + reverb) at progress 0 ...
    ref_noisy_prob_end: float = 0.5  # ... ramped linearly to this at progress 1
    ref_snr_db: tuple[float, float] = (0.0, 20.0)  # SNR of a noisy reference
    peak_limit: float = 0.95  # joint down-scaling when |mix| or |target| exceeds it
    mix_level_dbfs: tuple[float, float] = (-35.0, -15.0)  # mixture (and reference) RMS, dBFS

    def __post_init__(self) -> None:
        if not isinstance(self.sample_rate, int) or self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int (Hz), got {self.sample_rate}")
        for name in ("segment_seconds", "ref_seconds", "min_ref_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "target_absent_prob",
            "rir_prob",
            "speed_prob",
            "ref_noisy_prob_start",
            "ref_noisy_prob_end",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"{name} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        if not 0 <= self.min_interferers <= self.max_interferers:
            raise ValueError(
                f"need 0 <= min_interferers <= max_interferers, got "
                f"{self.min_interferers}, {self.max_interferers}"
            )
        if self.target_absent_prob > 0 and self.max_interferers == 0:
            log.warning("target-absent samples with no interferers are noise only")
        for name in ("sir_db", "snr_db", "ref_snr_db", "mix_level_dbfs"):
            _check_range(name, getattr(self, name))
        _check_range("speed_range", self.speed_range, lo=0.0)
        if self.mix_level_dbfs[1] > 0:
            raise ValueError(f"mix_level_dbfs must be <= 0 dBFS, got {self.mix_level_dbfs}")
        if self.early_reflection_ms < 0:
            raise ValueError(f"early_reflection_ms must be >= 0, got {self.early_reflection_ms}")
        if not 0 < self.peak_limit <= 1:
            raise ValueError(f"peak_limit must be in (0, 1], got {self.peak_limit}")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def ref_samples(self) -> int:
        return int(round(self.ref_seconds * self.sample_rate))

    def ref_noisy_prob(self, progress: float) -> float:
        """P(noisy reference) at training ``progress`` in [0, 1] (linear ramp)."""
        s, e = self.ref_noisy_prob_start, self.ref_noisy_prob_end
        return s + (e - s) * float(progress)


# ---------------------------------------------------------------------------------------------
# Speech pools


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
    object is pickled (``__getstate__``) or used after a fork, so it can be shipped to Ray
    workers. Only the samples a mixture needs are read (HDF5 slicing). ``speakers`` restricts the
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
        self._paths = shard_paths(manifest_path)
        wanted = None if speakers is None else set(speakers)
        self._where: dict[str, tuple[int, int]] = {}  # key -> (shard index, samples)
        self._keys: dict[str, list[str]] = defaultdict(list)
        for i, path in enumerate(self._paths):
            with h5py.File(path, "r") as f:
                if int(f.attrs["sample_rate"]) != self.sample_rate:
                    raise ShardError(f"{path} disagrees with its manifest's rate; repack it")
                for key in sorted(f.keys()):
                    spk = str(f[key].attrs["speaker"])
                    if wanted is None or spk in wanted:
                        self._where[key] = (i, int(f[key].shape[0]))
                        self._keys[spk].append(key)
        self._keys = dict(sorted(self._keys.items()))
        if wanted is not None and wanted - set(self._keys):
            missing = sorted(wanted - set(self._keys))
            raise ShardError(
                f"{len(missing)} requested speaker(s) not in the shards, e.g. {missing[0]}"
            )
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()

    @property
    def speakers(self) -> list[str]:
        return list(self._keys)

    def utterances(self, speaker: str) -> list[str]:
        return self._keys[speaker]

    def num_samples(self, key: str) -> int:
        return self._where[key][1]

    def _dataset(self, key: str) -> h5py.Dataset:
        if self._pid != os.getpid():  # forked: the parent's handles are not ours to use
            self._files, self._pid = {}, os.getpid()
        i = self._where[key][0]
        if i not in self._files:
            self._files[i] = h5py.File(self._paths[i], "r")
        return self._files[i][key]

    def load_span(self, key: str, start: int, stop: int) -> np.ndarray:
        data = self._dataset(key)[start:stop]
        if data.dtype == np.int16:  # speech is stored as 16-bit PCM (see hdf5_shards)
            return data.astype(np.float32) / 32768.0
        return data.astype(np.float32, copy=False)

    def load(self, key: str) -> np.ndarray:
        return self.load_span(key, 0, self.num_samples(key))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}  # h5py handles do not pickle; reopened lazily by the receiver
        return state


# ---------------------------------------------------------------------------------------------
# Signal helpers


@dataclass(frozen=True)
class _Rir:
    full: np.ndarray  # (L,) normalised to a unit maximum, -60 dB tail trimmed
    early: np.ndarray  # (peak + early + 1,) the direct path and early reflections
    peak: int  # direct-path index


def _prepare_rir(rir: np.ndarray, early_samples: int, sample_rate: int) -> _Rir:
    rir = np.asarray(rir, dtype=np.float64).reshape(-1)
    mag = np.abs(rir)
    if rir.size == 0 or mag.max() == 0:
        raise MixingError("an RIR in the bank is empty or silent; remove it from the bank")
    rir = rir / mag.max()
    # Direct path: the first arrival reaching half the maximum, refined to its local peak
    # within 1 ms; a strong later reflection (a floor bounce can beat the direct sound) must
    # not be mistaken for it, or "early" would start late.
    onset = int(np.flatnonzero(mag >= 0.5 * mag.max())[0])
    peak = onset + int(np.argmax(mag[onset : onset + max(1, sample_rate // 1000)]))
    # Energy after the point where the remaining tail is 60 dB down is inaudible under the
    # mixture but costs convolution time, so it is dropped.
    tail = np.cumsum(np.square(rir)[::-1])[::-1]
    keep = max(int(np.searchsorted(-tail, -1e-6 * tail[0])), peak + early_samples + 1)
    full = rir[: min(keep, rir.size)].astype(np.float32)
    return _Rir(full, full[: peak + early_samples + 1].copy(), peak)


def _power(x: np.ndarray) -> float:
    """Mean square (BLAS dot: no temporary; float32 accumulation is ~1e-6 relative)."""
    return float(np.dot(x, x)) / x.size if x.size else 0.0


def _db(ratio: float) -> float | None:
    return None if ratio <= 0 or not np.isfinite(ratio) else float(10 * np.log10(ratio))


Reader = Callable[[int, int], np.ndarray]  # (start, stop) -> samples


def perturbed_length(n: int, factor: Fraction) -> int:
    """Length of an ``n``-sample signal played ``factor`` times faster (resample_poly's)."""
    return -(-n * factor.denominator // factor.numerator)


def _read_perturbed(read: Reader, n: int, factor: Fraction, lo: int, hi: int) -> np.ndarray:
    """Samples ``[lo, hi)`` of ``y(m) = x(m * factor)`` (``x`` of length ``n`` read by ``read``),
    zero outside ``[0, perturbed_length)``; only the input span they need is read and resampled.
    """
    out = np.zeros(hi - lo, np.float32)
    p, q = factor.numerator, factor.denominator
    a, b = max(lo, 0), min(hi, perturbed_length(n, factor))
    if a >= b:
        return out
    if p == q:
        out[a - lo : b - lo] = read(a, b)
        return out
    # resample_poly's filter reaches 10 * max(p, q) / q input samples either side; starting the
    # span on a multiple of p puts its output grid on the full signal's grid (offset i0 * q / p).
    margin = 10 * max(p, q) // q + 2
    i0 = max(0, (a * p // q - margin) // p * p)
    i1 = min(n, -(-b * p // q) + margin)
    ys = resample_poly(read(i0, i1), q, p)
    g0 = i0 // p * q
    out[a - lo : b - lo] = ys[a - g0 : b - g0]
    return out


class _Clock:
    """Seconds spent per stage, summed over calls (what :func:`benchmark_mixing` reports)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# The mixer


@dataclass
class MixSample:
    """One mixture at ``cfg.sample_rate``, float32.

    ``mix``: (T,); ``target``: (T,) early-reverberant target as it sits in the mixture (zeros when
    absent); ``ref``: (R,) reference of the target speaker; ``present``: target in ``mix``;
    ``info``: speakers, keys, spans, drawn and realised SIR/SNR (dB), speeds, reverb/ref flags;
    ``components`` (only with ``return_components``): ``target_dry``, ``target_reverberant``
    (T,), ``interferers`` (K, T), ``noise`` (T,), scaled as in ``mix`` (``mix`` = their sum
    without ``target_dry``).
    """

    mix: np.ndarray
    target: np.ndarray
    ref: np.ndarray
    present: bool
    info: dict[str, Any]
    components: dict[str, np.ndarray] | None = None


class DynamicMixer:
    """Seeded TSE mixtures from a speech pool and noise / RIR banks (lists of (N,) arrays at
    ``cfg.sample_rate``, e.g. from :func:`datasets.augment.load_bank`). Either bank may be empty
    (no noise, resp. no reverberation). See the module docstring for the recipe."""

    def __init__(
        self,
        cfg: MixConfig,
        speech: SpeechPool,
        noise: list[np.ndarray],
        rirs: list[np.ndarray],
    ) -> None:
        self.cfg = cfg
        self.speech = speech
        if speech.sample_rate is not None and speech.sample_rate != cfg.sample_rate:
            raise MixingError(
                f"the speech pool is at {speech.sample_rate} Hz but cfg.sample_rate is "
                f"{cfg.sample_rate}; repack the speech at {cfg.sample_rate} Hz "
                f"(python -m ray_jobs.pack --sample-rate {cfg.sample_rate})"
            )
        self.speakers = list(speech.speakers)
        if len(self.speakers) < cfg.max_interferers + 1:
            raise MixingError(
                f"{len(self.speakers)} speaker(s) cannot give a target and "
                f"{cfg.max_interferers} other interferers; add speakers or lower max_interferers"
            )
        min_ref = int(round(min(cfg.min_ref_seconds, cfg.ref_seconds) * cfg.sample_rate))
        short = [
            s
            for s in self.speakers
            if len(speech.utterances(s)) == 1
            and speech.num_samples(speech.utterances(s)[0]) // 2 < min_ref
        ]
        if short:
            raise MixingError(
                f"{len(short)} speaker(s) have a single utterance shorter than 2 x min_ref_seconds "
                f"({cfg.min_ref_seconds} s), so no separate reference can be cut, e.g. "
                f"{short[0]!r}; drop them from the pool or lower min_ref_seconds"
            )
        self.noise = [np.asarray(n, np.float32).reshape(-1) for n in noise if np.size(n) > 0]
        early = int(round(cfg.early_reflection_ms * cfg.sample_rate / 1000))
        self.rirs = [_prepare_rir(r, early, cfg.sample_rate) for r in rirs if np.size(r) > 0]
        if cfg.rir_prob > 0 and not self.rirs:
            log.warning("rir_prob=%g but the RIR bank is empty: mixtures are dry", cfg.rir_prob)
        if not self.noise:
            log.warning("the noise bank is empty: mixtures get no noise")
        self.clock = _Clock()
        self._spectra: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_spectra"] = {}  # a cache: rebuilt by the receiver, not worth shipping
        return state

    # -- one source ---------------------------------------------------------------------------
    def _spectrum(self, idx: int, nfft: int) -> tuple[np.ndarray, np.ndarray]:
        """rfft of RIR ``idx`` (full, early) at ``nfft``; a bounded cache, since a mixture
        convolves several sources at one or two FFT sizes and the RIR FFTs would be a third of
        the work."""
        key = (idx, nfft)
        if key not in self._spectra:
            if len(self._spectra) >= _SPECTRUM_CACHE:
                self._spectra.pop(next(iter(self._spectra)))
            r = self.rirs[idx]
            self._spectra[key] = (scipy.fft.rfft(r.full, nfft), scipy.fft.rfft(r.early, nfft))
        return self._spectra[key]

    def _render(
        self, src: dict[str, Any], start: int, length: int, rir_idx: int | None, early: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(dry, reverberant, early_reverberant)`` of ``src`` over ``[start, start + length)``
        of its speed-perturbed timeline; reverberant signals are aligned to the direct path."""
        key, base = src["key"], src["span"][0]

        def read(a: int, b: int) -> np.ndarray:
            with self.clock("read"):
                return self.speech.load_span(key, base + a, base + b)

        if rir_idx is None:
            with self.clock("speed+read"):
                y = _read_perturbed(read, src["n"], src["speed"], start, start + length)
            return y, y, y
        rir = self.rirs[rir_idx]
        L, pk = rir.full.size, rir.peak
        with self.clock("speed+read"):  # y: (length + L - 1,), all the input the crop hears
            y = _read_perturbed(
                read, src["n"], src["speed"], start + pk - L + 1, start + length + pk
            )
        with self.clock("reverb"):
            # Circular convolution at nfft >= len(y): outputs L-1 .. L-1+length never wrap, and
            # they are exactly the crop of the full linear convolution ("valid" part).
            nfft = scipy.fft.next_fast_len(y.size, real=True)
            h_full, h_early = self._spectrum(rir_idx, nfft)
            spec = scipy.fft.rfft(y, nfft)
            wet = scipy.fft.irfft(spec * h_full, nfft)[L - 1 : L - 1 + length]
            ewet = scipy.fft.irfft(spec * h_early, nfft)[L - 1 : L - 1 + length] if early else wet
        dry = y[L - 1 - pk : L - 1 - pk + length]
        return dry, wet, ewet

    def _source(self, key: str, span: tuple[int, int], speed: Fraction) -> dict[str, Any]:
        return {"key": key, "span": span, "n": span[1] - span[0], "speed": speed}

    def _speed(self, rng: np.random.Generator) -> Fraction:
        c = self.cfg
        f = rng.uniform(*c.speed_range)
        if rng.random() >= c.speed_prob:
            return Fraction(1)
        return Fraction(int(round(f * _SPEED_STEP)), _SPEED_STEP)

    def _crop_start(self, rng: np.random.Generator, src: dict[str, Any], length: int) -> int:
        """Segment start on the perturbed timeline: a random crop, or a random placement of a
        shorter source inside the zero-padded segment."""
        m = perturbed_length(src["n"], src["speed"])
        return int(rng.integers(min(0, m - length), max(0, m - length) + 1))

    # -- one mixture --------------------------------------------------------------------------
    def mix(
        self, seed: int, progress: float = 0.0, *, return_components: bool = False
    ) -> MixSample:
        """The mixture for ``seed`` (int >= 0) at training ``progress`` in [0, 1].

        Fully determined by ``(seed, progress)``; ``progress`` only moves the probability of a
        noisy reference, so one seed gives the same mixture at every progress. Levels: the
        reverberant target crop has unit power, interferer ``i`` ``-sir_db[i]`` dB below it (for
        target-absent samples below a nominal unit level, so SIRs keep their spread), noise
        ``snr_db`` below the speech sum; then one gain sets the level and the peak limit.
        ``return_components`` adds the scaled sources (debugging, tests).
        """
        c = self.cfg
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be in [0, 1], got {progress}")
        rng, rng_ref = (
            np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), _SALT]).spawn(2)
        )
        T, R = c.segment_samples, c.ref_samples

        # Plan: every random choice is drawn here, in a fixed order.
        spk = self.speakers[int(rng.integers(len(self.speakers)))]
        present = bool(rng.random() >= c.target_absent_prob)
        k = int(rng.integers(c.min_interferers, c.max_interferers + 1))
        others = [s for s in self.speakers if s != spk]
        inter_spk = [others[i] for i in rng.choice(len(others), size=k, replace=False)]
        speeds = [self._speed(rng) for _ in range(k + 1)]
        reverberant = bool(self.rirs) and bool(rng.random() < c.rir_prob)
        rir_idx = (
            rng.choice(len(self.rirs), size=k + 1, replace=len(self.rirs) < k + 1).tolist()
            if reverberant
            else []
        )
        sirs = rng.uniform(*c.sir_db, size=k)
        snr = float(rng.uniform(*c.snr_db))
        level = float(rng.uniform(*c.mix_level_dbfs))
        utts = self.speech.utterances(spk)
        if len(utts) >= 2:
            t_key, r_key = (utts[i] for i in rng.choice(len(utts), size=2, replace=False))
            t_span = (0, self.speech.num_samples(t_key))
            r_span = (0, self.speech.num_samples(r_key))
        else:  # one utterance: cut a reference off its start or end, the target is the rest
            t_key = r_key = utts[0]
            n = self.speech.num_samples(t_key)
            r = min(int(np.ceil(R * speeds[0])), n // 2)
            first = bool(rng.random() < 0.5)
            r_span, t_span = ((0, r), (r, n)) if first else ((n - r, n), (0, n - r))
        srcs = [self._source(t_key, t_span, speeds[0])]
        for s, f in zip(inter_spk, speeds[1:], strict=True):
            keys = self.speech.utterances(s)
            key = keys[int(rng.integers(len(keys)))]
            srcs.append(self._source(key, (0, self.speech.num_samples(key)), f))
        starts = [self._crop_start(rng, s, T) for s in srcs]
        noise_idx = int(rng.integers(len(self.noise))) if self.noise else -1

        # Render: sources are scaled on their cropped reverberant signal.
        rirs = rir_idx if reverberant else [None] * (k + 1)
        zeros = np.zeros(T, np.float32)
        dry_t = wet_t = early_t = zeros
        p_t = 1.0  # an absent target's nominal power: interferer levels keep their meaning
        if present:
            dry_t, wet_t, early_t = self._render(srcs[0], starts[0], T, rirs[0], early=True)
            p = _power(wet_t)
            g = float(1.0 / np.sqrt(p)) if p > _EPS else 1.0
            dry_t, wet_t, early_t = dry_t * g, wet_t * g, early_t * g
            p_t = _power(wet_t) if p > _EPS else 1.0
        inter = np.zeros((k, T), np.float32)
        for i in range(k):
            w = self._render(srcs[i + 1], starts[i + 1], T, rirs[i + 1], early=False)[1]
            p = _power(w)
            inter[i] = w * float(np.sqrt(p_t * 10 ** (-sirs[i] / 10) / p)) if p > _EPS else w
        speech = wet_t + inter.sum(axis=0)
        p_s = _power(speech)
        noise = zeros
        if self.noise:
            seg = crop_or_pad(self.noise[noise_idx], T, rng)
            p_n = _power(seg)
            ref_p = p_s if p_s > _EPS else 1.0  # noise-only mixture: noise at the nominal level
            noise = seg * float(np.sqrt(ref_p / (p_n * 10 ** (snr / 10)))) if p_n > _EPS else zeros
        mix = speech + noise
        p_mix = _power(mix)
        gain = float(10 ** (level / 20) / np.sqrt(p_mix)) if p_mix > _EPS else 1.0
        peak = gain * max(float(np.max(np.abs(mix))), float(np.max(np.abs(early_t))))
        if peak > c.peak_limit:  # one gain for everything keeps every SIR and the SNR
            gain *= c.peak_limit / peak

        ref, ref_info = self._reference(rng_ref, progress, r_key, r_span, speeds[0])
        p_i = [_power(x) for x in inter]
        info: dict[str, Any] = {
            "seed": int(seed),
            "target_speaker": spk,
            "present": present,
            "target_key": t_key,
            "target_span": t_span,
            "interferer_speakers": inter_spk,
            "interferer_keys": [s["key"] for s in srcs[1:]],
            "sir_db": [float(x) for x in sirs],
            "sir_db_realised": [_db(p_t / p) for p in p_i],  # p_t: power of wet_t, or nominal 1
            "snr_db": snr if self.noise else None,
            "snr_db_realised": _db(p_s / _power(noise)) if self.noise else None,
            "speed": [float(f) for f in speeds],
            "reverberant": reverberant,
            "rir_indices": rir_idx,
            "starts": starts,  # crop starts on each source's perturbed timeline (target first)
            "noise_index": noise_idx,
            "mix_level_dbfs": _db(p_mix * gain**2),
            "gain": float(gain),
            **ref_info,
        }
        comps = None
        if return_components:
            comps = {
                "target_dry": (dry_t * gain).astype(np.float32),
                "target_reverberant": (wet_t * gain).astype(np.float32),
                "interferers": (inter * gain).astype(np.float32),
                "noise": (noise * gain).astype(np.float32),
            }
        return MixSample(
            mix=(mix * gain).astype(np.float32),
            target=(early_t * gain).astype(np.float32),
            ref=ref,
            present=present,
            info=info,
            components=comps,
        )

    def _reference(
        self,
        rng: np.random.Generator,
        progress: float,
        key: str,
        span: tuple[int, int],
        speed: Fraction,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The reference (R,): the target's speed factor (a perturbed voice is another voice,
        so the reference must match it), noise + reverb with the ramped probability."""
        c, R = self.cfg, self.cfg.ref_samples
        u = rng.random()
        src = self._source(key, span, speed)
        m = perturbed_length(src["n"], speed)
        start = int(rng.integers(0, m - R + 1)) if m > R else 0  # short: whole, zero-padded
        rir = int(rng.integers(len(self.rirs))) if self.rirs else None
        snr = float(rng.uniform(*c.ref_snr_db))
        level = float(rng.uniform(*c.mix_level_dbfs))
        noise_idx = int(rng.integers(len(self.noise))) if self.noise else -1
        noisy = bool(u < c.ref_noisy_prob(progress))
        ref = self._render(src, start, R, rir if noisy else None, early=False)[1]
        if noisy and self.noise:
            seg = crop_or_pad(self.noise[noise_idx], R, rng)
            p_r, p_n = _power(ref), _power(seg)
            if p_n > _EPS and p_r > _EPS:
                ref = ref + seg * float(np.sqrt(p_r / (p_n * 10 ** (snr / 10))))
        p = _power(ref)
        gain = float(10 ** (level / 20) / np.sqrt(p)) if p > _EPS else 1.0
        peak = gain * float(np.max(np.abs(ref)))
        if peak > c.peak_limit:
            gain *= c.peak_limit / peak
        info = {
            "ref_key": key,
            "ref_span": span,
            "ref_noisy": noisy,
            "ref_snr_db": snr if noisy and self.noise else None,
        }
        return (ref * gain).astype(np.float32), info


# ---------------------------------------------------------------------------------------------
# Batches, evaluation sets, benchmarks, speaker splits


def mix_batch(
    mixer: DynamicMixer, seeds: np.ndarray, progress: np.ndarray | float = 0.0
) -> dict[str, np.ndarray]:
    """Mix one sample per seed: ``{"mix": (B, T), "target": (B, T), "ref": (B, R),
    "present": (B,)}``, all float32 (the function Ray Data's ``map_batches`` calls).
    ``progress``: one float or one per seed."""
    seeds = np.asarray(seeds).reshape(-1)
    prog = np.broadcast_to(np.asarray(progress, dtype=np.float64), seeds.shape)
    samples = [mixer.mix(int(s), float(p)) for s, p in zip(seeds, prog, strict=True)]
    c = mixer.cfg
    if not samples:
        return {
            "mix": np.zeros((0, c.segment_samples), np.float32),
            "target": np.zeros((0, c.segment_samples), np.float32),
            "ref": np.zeros((0, c.ref_samples), np.float32),
            "present": np.zeros((0,), np.float32),
        }
    return {
        "mix": np.stack([s.mix for s in samples]),
        "target": np.stack([s.target for s in samples]),
        "ref": np.stack([s.ref for s in samples]),
        "present": np.asarray([s.present for s in samples], dtype=np.float32),
    }


def make_eval_set(mixer: DynamicMixer, n: int, seed: int) -> list[MixSample]:
    """``n`` deterministic held-out mixtures (give the mixer a held-out speaker pool).

    Mixed at ``progress=1.0``: the references are noisy with ``ref_noisy_prob_end``, the
    condition training ends in, so the score measures the final task rather than the easy start.
    Seeds come from a stream salted apart from training seeds.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    seeds = np.random.default_rng([int(seed), _EVAL_SALT]).integers(0, 2**62, size=n)
    return [mixer.mix(int(s), 1.0) for s in seeds]


def benchmark_mixing(mixer: DynamicMixer, n: int, seed: int = 0) -> dict[str, Any]:
    """Mixtures per second on one core (run with ``OMP_NUM_THREADS=1``; scipy's FFTs are
    single-threaded by default) and milliseconds per mixture per stage: ``read`` (speech I/O),
    ``speed+read`` (speed perturbation, including ``read``), ``reverb`` (RIR FFT convolution),
    ``other`` (plan, crops, levels, noise). ``cpu_mixes_per_s`` uses process CPU time, which a
    machine shared with other jobs inflates less than wall time."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    mixer.mix(seed)  # warm-up: first-touch allocations, HDF5 handles, RIR spectra
    mixer.clock.seconds.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        mixer.mix(seed + 1 + i, 1.0)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = {k: 1000 * v / n for k, v in mixer.clock.seconds.items()}
    st["other"] = 1000 * total / n - st.get("speed+read", 0.0) - st.get("reverb", 0.0)
    return {
        "mixes_per_s": n / total,
        "cpu_mixes_per_s": n / cpu if cpu > 0 else float("inf"),
        "ms_per_mix": 1000 * total / n,
        "n": n,
        "segment_seconds": mixer.cfg.segment_seconds,
        "sample_rate": mixer.cfg.sample_rate,
        "stage_ms": st,
    }


def speaker_split(
    speakers: list[str], held_out: float | int, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` speaker lists, disjoint; the same split as
    :func:`datasets.manifests.split_speakers` gives for utterances of these speakers."""
    if len(set(speakers)) != len(speakers):
        raise MixingError("speaker list has duplicates; pass each speaker once")
    utts = [Utterance(s, "", "", s, s) for s in speakers]
    train, held = split_speakers(utts, held_out, seed)
    return [u.speaker for u in train], [u.speaker for u in held]

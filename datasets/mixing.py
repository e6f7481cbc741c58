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

This module is the mixer and its batch/evaluation/benchmark helpers; the parts it composes live
beside it: ``datasets.mixing_config`` (:class:`MixConfig`, :class:`MixingError`),
``datasets.speech_pools`` (memory and HDF5 shard pools, speaker splits) and
``datasets.mixing_signal`` (RIR preparation, span-wise speed perturbation, levels).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.fft

from datasets.banks import Bank, as_bank
from datasets.mixing_config import MixConfig, MixingError
from datasets.mixing_signal import (
    SILENT_POWER,
    Rir,
    StageClock,
    mean_power,
    perturbed_length,
    prepare_rir,
    read_perturbed,
    to_db,
)
from datasets.speech_pools import SpeechPool

log = logging.getLogger(__name__)

_SALT = 0x7E5E  # separates the mixer's random stream from other users of the same seed
_EVAL_SALT = 0xE7A1
_SPEED_STEP = 100  # speed factors are multiples of 1/100: short polyphase filters
_SPECTRUM_CACHE = 64  # RIR spectra (about 1 MB each at 48 kHz) and prepared RIRs kept per mixer


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
    """Seeded TSE mixtures from a speech pool and noise / RIR banks at ``cfg.sample_rate``
    (``datasets.banks``: packed banks are read on demand, a noise crop or one RIR at a time;
    lists of (N,) arrays work too). Either bank may be empty or None (no noise, resp. no
    reverberation). See the module docstring for the recipe."""

    def __init__(
        self,
        cfg: MixConfig,
        speech: SpeechPool,
        noise: Bank | list[np.ndarray] | None,
        rirs: Bank | list[np.ndarray] | None,
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
        self.noise = as_bank(noise)
        self.rirs = as_bank(rirs)
        self._early = int(round(cfg.early_reflection_ms * cfg.sample_rate / 1000))
        self._prepared: dict[int, Rir] = {}  # bounded cache of prepared RIRs (see rir())
        if cfg.rir_prob > 0 and not self.rirs:
            log.warning("rir_prob=%g but the RIR bank is empty: mixtures are dry", cfg.rir_prob)
        if not self.noise:
            log.warning("the noise bank is empty: mixtures get no noise")
        self.clock = StageClock()
        self._spectra: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_spectra"] = {}  # caches: rebuilt by the receiver, not worth shipping
        state["_prepared"] = {}
        return state

    def rir(self, idx: int) -> Rir:
        """RIR ``idx`` of the bank, prepared (direct path, early part, trimmed tail); read and
        prepared on first use and kept in a bounded cache, so a large bank is never held."""
        r = self._prepared.get(idx)
        if r is None:
            if len(self._prepared) >= _SPECTRUM_CACHE:
                self._prepared.pop(next(iter(self._prepared)))
            r = self._prepared[idx] = prepare_rir(
                self.rirs.load(idx), self._early, self.cfg.sample_rate
            )
        return r

    # -- one source ---------------------------------------------------------------------------
    def _spectrum(self, idx: int, nfft: int) -> tuple[np.ndarray, np.ndarray]:
        """rfft of RIR ``idx`` (full, early) at ``nfft``; a bounded cache, since a mixture
        convolves several sources at one or two FFT sizes and the RIR FFTs would be a third of
        the work."""
        key = (idx, nfft)
        if key not in self._spectra:
            if len(self._spectra) >= _SPECTRUM_CACHE:
                self._spectra.pop(next(iter(self._spectra)))
            r = self.rir(idx)
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
                y = read_perturbed(read, src["n"], src["speed"], start, start + length)
            return y, y, y
        rir = self.rir(rir_idx)
        L, pk = rir.full.size, rir.peak
        with self.clock("speed+read"):  # y: (length + L - 1,), all the input the crop hears
            y = read_perturbed(
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
            p = mean_power(wet_t)
            g = float(1.0 / np.sqrt(p)) if p > SILENT_POWER else 1.0
            dry_t, wet_t, early_t = dry_t * g, wet_t * g, early_t * g
            p_t = mean_power(wet_t) if p > SILENT_POWER else 1.0
        inter = np.zeros((k, T), np.float32)
        for i in range(k):
            w = self._render(srcs[i + 1], starts[i + 1], T, rirs[i + 1], early=False)[1]
            p = mean_power(w)
            inter[i] = (
                w * float(np.sqrt(p_t * 10 ** (-sirs[i] / 10) / p)) if p > SILENT_POWER else w
            )
        speech = wet_t + inter.sum(axis=0)
        p_s = mean_power(speech)
        noise = zeros
        if self.noise:
            seg = self.noise.crop(noise_idx, T, rng)
            p_n = mean_power(seg)
            # A noise-only mixture gets its noise at the nominal level.
            ref_p = p_s if p_s > SILENT_POWER else 1.0
            noise = (
                seg * float(np.sqrt(ref_p / (p_n * 10 ** (snr / 10))))
                if p_n > SILENT_POWER
                else zeros
            )
        mix = speech + noise
        p_mix = mean_power(mix)
        gain = float(10 ** (level / 20) / np.sqrt(p_mix)) if p_mix > SILENT_POWER else 1.0
        peak = gain * max(float(np.max(np.abs(mix))), float(np.max(np.abs(early_t))))
        if peak > c.peak_limit:  # one gain for everything keeps every SIR and the SNR
            gain *= c.peak_limit / peak

        ref, ref_info = self._reference(rng_ref, progress, r_key, r_span, speeds[0])
        p_i = [mean_power(x) for x in inter]
        info: dict[str, Any] = {
            "seed": int(seed),
            "target_speaker": spk,
            "present": present,
            "target_key": t_key,
            "target_span": t_span,
            "interferer_speakers": inter_spk,
            "interferer_keys": [s["key"] for s in srcs[1:]],
            "sir_db": [float(x) for x in sirs],
            "sir_db_realised": [to_db(p_t / p) for p in p_i],  # p_t: power of wet_t, or nominal 1
            "snr_db": snr if self.noise else None,
            "snr_db_realised": to_db(p_s / mean_power(noise)) if self.noise else None,
            "speed": [float(f) for f in speeds],
            "reverberant": reverberant,
            "rir_indices": rir_idx,
            "starts": starts,  # crop starts on each source's perturbed timeline (target first)
            "noise_index": noise_idx,
            "mix_level_dbfs": to_db(p_mix * gain**2),
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
            seg = self.noise.crop(noise_idx, R, rng)
            p_r, p_n = mean_power(ref), mean_power(seg)
            if p_n > SILENT_POWER and p_r > SILENT_POWER:
                ref = ref + seg * float(np.sqrt(p_r / (p_n * 10 ** (snr / 10))))
        p = mean_power(ref)
        gain = float(10 ** (level / 20) / np.sqrt(p)) if p > SILENT_POWER else 1.0
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
# Batches, evaluation sets, benchmarks


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

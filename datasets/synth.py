"""Synthetic multi-speaker speech so that the demo and the tests need no downloaded corpus.

A source-filter synthesiser in the spirit of Klatt's cascade formant synthesiser (D. Klatt,
"Software for a cascade/parallel formant synthesizer", JASA 1980): a glottal source (Rosenberg
pulses at a time-varying f0 with declination, phrase accents, jitter, shimmer and aspiration
noise) and a noise source are shaped frame by frame in the STFT domain by the magnitude response
of a cascade of five formant resonators, whose targets come from a random phone sequence
(vowels, approximants, nasals, fricatives, plosives, pauses) and are interpolated between phone
centres (coarticulation). Each :class:`Voice` fixes what makes a speaker recognisable: f0 level
and range, vocal-tract length (formant scale) and per-formant deviations, a vowel "accent",
bandwidths, spectral tilt, voice quality, a fixed extra resonance and the speaking rate. The
content is drawn afresh for every utterance, so two utterances of one speaker share only the voice.
It is not intelligible speech; it is a fast stand-in whose speaker identity a model can learn.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.signal import istft, stft

from datasets.audio import write_audio
from datasets.manifests import Utterance, make_key

log = logging.getLogger(__name__)

# Peterson & Barney (1952) average F1-F3 (Hz) for adult male speakers.
VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010),
    "I": (390, 1990, 2550),
    "E": (530, 1840, 2480),
    "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440),
    "O": (570, 840, 2410),
    "U": (440, 1020, 2240),
    "u": (300, 870, 2240),
    "V": (640, 1190, 2390),
    "er": (490, 1350, 1690),
}
_VOWEL_NAMES = tuple(VOWELS)
# Voiced consonants with formant targets: (F1, F2, F3, voiced gain dB).
_SONORANTS = {
    "m": (250, 1000, 2300, -10.0),
    "n": (250, 1500, 2500, -10.0),
    "l": (360, 1300, 2800, -6.0),
    "r": (420, 1300, 1600, -6.0),
    "w": (300, 700, 2200, -7.0),
    "j": (280, 2250, 3000, -7.0),
}
# Noise-excited consonants: (noise centre Hz, bandwidth Hz, noise gain dB, voiced gain dB).
_FRICATIVES = {
    "s": (5500, 2500, -14.0, None),
    "S": (2900, 1600, -14.0, None),
    "f": (4000, 6000, -26.0, None),
    "z": (5500, 2500, -18.0, -16.0),
    "v": (4000, 6000, -26.0, -14.0),
    "h": (0, 0, -22.0, None),  # aspiration shaped by the vocal tract (next vowel's formants)
}
# Plosives: (burst centre Hz, voiced).
_PLOSIVES = {"p": (900, False), "t": (4200, False), "k": (2000, False), "b": (900, True),
             "d": (4200, True), "g": (2000, True)}  # fmt: skip
_CONSONANTS = tuple(_SONORANTS) + tuple(_FRICATIVES) + tuple(_PLOSIVES)

N_FFT = 512
HOP = 128


@dataclass(frozen=True)
class Voice:
    """The fixed, speaker-defining parameters of a synthetic voice."""

    f0_mean: float  # Hz; mean fundamental frequency
    f0_range: float  # semitones of intonation excursion (declination + accents)
    formant_scale: float  # ~1/vocal-tract length: multiplies all formants (men ~1.0, women ~1.17)
    formant_shift: tuple[float, ...]  # per-formant multipliers F1..F5 (individual anatomy)
    accent: tuple[float, ...]  # per-vowel (F1, F2) multipliers, len 2 * len(VOWELS)
    bandwidth_scale: float  # formant bandwidth multiplier (larger = duller, breathier)
    spectral_tilt: float  # extra dB per octave above 500 Hz
    breathiness: float  # aspiration noise in the glottal source, relative amplitude
    jitter: float  # cycle-to-cycle relative f0 perturbation (std)
    shimmer: float  # cycle-to-cycle relative amplitude perturbation (std)
    open_quotient: float  # open fraction of each glottal cycle (0.4 pressed .. 0.75 breathy)
    nasality: float  # dB of a fixed low-frequency (~300 Hz) nasal bump
    colour_freq: float  # Hz; a fixed extra resonance (piriform-fossa / "singer's formant"-like)
    colour_gain: float  # dB of that resonance (negative: a dip)
    speaking_rate: float  # syllables per second


def sample_voice(rng: np.random.Generator) -> Voice:
    """A random adult voice; parameters span the human range so voices differ audibly."""
    female = rng.random() < 0.5
    f0 = float(np.exp(rng.normal(np.log(205.0 if female else 115.0), 0.14)))
    scale = float(rng.normal(1.17 if female else 1.0, 0.05))
    return Voice(
        f0_mean=float(np.clip(f0, 75.0, 320.0)),
        f0_range=float(rng.uniform(2.0, 8.0)),
        formant_scale=float(np.clip(scale, 0.85, 1.35)),
        formant_shift=tuple(float(x) for x in rng.normal(1.0, [0.03, 0.04, 0.05, 0.06, 0.06])),
        accent=tuple(float(x) for x in rng.normal(1.0, 0.06, 2 * len(VOWELS))),
        bandwidth_scale=float(rng.uniform(0.7, 1.6)),
        spectral_tilt=float(rng.uniform(-5.0, 2.0)),
        breathiness=float(rng.uniform(0.0, 0.35)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.12)),
        open_quotient=float(rng.uniform(0.4, 0.75)),
        nasality=float(rng.uniform(0.0, 8.0)),
        colour_freq=float(rng.uniform(2200.0, 4800.0)),
        colour_gain=float(rng.uniform(-8.0, 8.0)),
        speaking_rate=float(rng.uniform(3.0, 6.0)),
    )


def _voice_vector(v: Voice) -> np.ndarray:
    """Rough perceptual coordinates (each ~unit spread) used to keep voices apart."""
    return np.array(
        [
            np.log(v.f0_mean) / 0.15,
            v.formant_scale / 0.05,
            v.spectral_tilt / 2.0,
            v.colour_freq / 800.0,
            v.colour_gain / 4.0,
            v.bandwidth_scale / 0.3,
            v.speaking_rate / 1.0,
        ]
    )


def _resonance(freqs: np.ndarray, fc: np.ndarray, bw: np.ndarray, sr: int) -> np.ndarray:
    """|H| of 2-pole resonators with unit DC gain (Klatt). ``fc, bw: (N, 1)``, -> ``(N, bins)``.

    ``|1 + b z^-1 + c z^-2|^2 = 1 + b^2 + c^2 + 2 b (1 + c) cos w + 2 c cos 2w`` on the unit circle.
    """
    r = np.exp(-np.pi * bw / sr)
    b = -2 * r * np.cos(2 * np.pi * fc / sr)
    c = r * r
    w = 2 * np.pi * freqs[None, :] / sr
    mag2 = 1 + b * b + c * c + 2 * b * (1 + c) * np.cos(w) + 2 * c * np.cos(2 * w)
    return np.abs(1 + b + c) / np.sqrt(np.maximum(mag2, 1e-18))


def _plan(voice: Voice, seconds: float, rng: np.random.Generator) -> list[dict]:
    """Random phone sequence (syllables, words, pauses) covering ``seconds``."""
    slow = 4.5 / voice.speaking_rate
    phones: list[dict] = [{"kind": "sil", "dur": rng.uniform(0.05, 0.2)}]
    total = phones[0]["dur"]
    while total < seconds:
        for _ in range(int(rng.integers(1, 4))):  # syllables in a word
            stressed = rng.random() < 0.4
            onset = int(rng.choice([0, 1, 1, 2]))
            coda = int(rng.choice([0, 0, 1]))
            cons = [str(rng.choice(_CONSONANTS)) for _ in range(onset + coda)]
            syl = [{"kind": "c", "name": c} for c in cons[:onset]]
            syl.append(
                {"kind": "v", "name": str(rng.choice(_VOWEL_NAMES)), "stress": bool(stressed)}
            )
            syl += [{"kind": "c", "name": c} for c in cons[onset:]]
            for ph in syl:
                base = 0.09 if ph["kind"] == "v" else 0.06
                if ph.get("stress"):
                    base *= 1.4
                ph["dur"] = base * slow * float(np.exp(rng.normal(0, 0.25)))
                ph["gain"] = float(rng.normal(0, 2.0)) + (2.0 if ph.get("stress") else 0.0)
                total += ph["dur"]
            phones += syl
        if rng.random() < 0.35:
            pause = {"kind": "sil", "dur": float(rng.uniform(0.08, 0.3)) * slow}
            phones.append(pause)
            total += pause["dur"]
    return phones


def synthesize_utterance(
    voice: Voice, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """``float32 (round(seconds * sample_rate),)`` speech-like audio in ``voice``, peak 0.5-0.9."""
    sr = int(sample_rate)
    n = int(round(seconds * sr))
    if n < N_FFT:
        raise ValueError(f"seconds={seconds} is too short to synthesise (need >= {N_FFT / sr} s)")
    phones = _plan(voice, seconds, rng)
    hop_s = HOP / sr
    n_frames = n // HOP + 1
    fs = voice.formant_scale * np.array(voice.formant_shift)  # (5,)
    f45 = np.array([3300.0, 3750.0]) * fs[3:]

    # --- per-phone targets -> per-frame tracks --------------------------------------------
    centres, f_targets = [], []  # formant targets at voiced phone centres
    av = np.zeros(n_frames)  # voiced amplitude (linear)
    an = np.zeros(n_frames)  # noise amplitude (linear)
    noise_shape = np.zeros(n_frames, dtype=int)  # index into noise_spectra (0 = aspiration)
    noise_specs: list[tuple[float, float]] = [(0.0, 0.0)]
    t = 0.0
    for ph in phones:
        a, b = int(t / hop_s), int((t + ph["dur"]) / hop_s)
        b = max(b, a + 1)
        t += ph["dur"]
        if a >= n_frames:
            break
        sl = slice(a, min(b, n_frames))
        g = 10 ** (ph.get("gain", 0.0) / 20)
        name = ph.get("name")
        if ph["kind"] == "v":
            k = _VOWEL_NAMES.index(name)
            f1, f2, f3 = VOWELS[name]
            f = np.array([f1 * voice.accent[2 * k], f2 * voice.accent[2 * k + 1], f3]) * fs[:3]
            centres.append((a + b) / 2)
            f_targets.append(f)
            av[sl] = g
        elif name in _SONORANTS:
            f1, f2, f3, gdb = _SONORANTS[name]
            centres.append((a + b) / 2)
            f_targets.append(np.array([f1, f2, f3]) * fs[:3])
            av[sl] = g * 10 ** (gdb / 20)
        elif name in _FRICATIVES:
            fc, bw, ndb, vdb = _FRICATIVES[name]
            if fc:
                noise_specs.append((fc * voice.formant_scale**0.5, bw))
                noise_shape[sl] = len(noise_specs) - 1
            an[sl] = g * 10 ** (ndb / 20)
            if vdb is not None:
                av[sl] = g * 10 ** (vdb / 20)
        elif name in _PLOSIVES:
            fc, voiced = _PLOSIVES[name]
            closure = max(1, int((b - a) * 0.6))
            if voiced:
                av[a : min(a + closure, n_frames)] = g * 10 ** (-26 / 20)  # voice bar
            burst = slice(min(a + closure, n_frames), min(b, n_frames))
            noise_specs.append((fc * voice.formant_scale**0.5, 1500.0))
            noise_shape[burst] = len(noise_specs) - 1
            an[burst] = g * 10 ** (-10 / 20)
            if not voiced:  # aspiration after the burst
                asp = slice(min(a + closure + 2, n_frames), min(b, n_frames))
                noise_shape[asp] = 0
                an[asp] = g * 10 ** (-20 / 20)
    frames = np.arange(n_frames)
    if not centres:  # all silence/consonants: a neutral tract
        centres, f_targets = [0.0], [np.array([500.0, 1500.0, 2500.0]) * fs[:3]]
    f_targets_arr = np.array(f_targets)  # (P, 3)
    formants = np.stack(
        [np.interp(frames, centres, f_targets_arr[:, j]) for j in range(3)], axis=1
    )  # (frames, 3)
    formants = np.concatenate([formants, np.broadcast_to(f45, (n_frames, 2))], axis=1)
    bws = np.array([70.0, 100.0, 150.0, 220.0, 280.0]) * voice.bandwidth_scale
    kern = np.hanning(5)[1:-1]
    kern /= kern.sum()
    av = np.convolve(av, kern, mode="same")  # ~25 ms onset/offset ramps, no clicks
    an = np.convolve(an, kern, mode="same")

    # --- glottal source -----------------------------------------------------------------
    n_pts = max(2, int(seconds * 4))  # slow intonation control points (4 per second)
    semis = np.cumsum(rng.normal(0, 0.35, n_pts)) * voice.f0_range / 4
    semis += np.linspace(voice.f0_range / 2, -voice.f0_range / 2, n_pts)  # declination
    ts = np.arange(n) / sr
    f0 = voice.f0_mean * 2 ** (np.interp(ts, np.linspace(0, seconds, n_pts), semis) / 12)
    phase0 = np.cumsum(f0 / sr)
    n_cycles = int(phase0[-1]) + 2
    jit = 1 + voice.jitter * rng.standard_normal(n_cycles)
    phase = np.cumsum(f0 * jit[phase0.astype(int)] / sr)
    cyc = phase.astype(int)
    frac = phase - cyc
    oq = voice.open_quotient
    rise = 0.65 * oq
    pulse = np.where(
        frac < rise,
        0.5 * (1 - np.cos(np.pi * frac / rise)),
        np.where(frac < oq, np.cos(0.5 * np.pi * (frac - rise) / (oq - rise)), 0.0),
    )
    shim = 1 + voice.shimmer * rng.standard_normal(cyc[-1] + 2)
    source = np.diff(pulse * shim[cyc], prepend=0.0)  # lip radiation ~ derivative
    source /= np.sqrt(np.mean(source**2)) + 1e-12
    source += voice.breathiness * rng.standard_normal(n) * (pulse > 0)
    noise = rng.standard_normal(n)

    # --- spectral shaping, frame by frame --------------------------------------------------
    freqs = np.fft.rfftfreq(N_FFT, 1 / sr)
    _, _, sv = stft(source, fs=sr, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary="even")
    _, _, sn = stft(noise, fs=sr, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary="even")
    m = min(sv.shape[1], n_frames)
    sv, sn = sv[:, :m], sn[:, :m]
    tract = np.ones((m, freqs.size))
    for j in range(5):
        tract *= _resonance(freqs, formants[:m, j : j + 1], np.full((m, 1), bws[j]), sr)
    octaves = np.log2(np.maximum(freqs, 100.0) / 500.0)
    fixed = 10 ** (voice.spectral_tilt * np.maximum(octaves, 0) / 20)
    fixed *= (
        1
        + (10 ** (voice.colour_gain / 20) - 1)
        * _resonance(freqs, np.array([[voice.colour_freq]]), np.array([[400.0]]), sr)[0]
        / _resonance(freqs, np.array([[voice.colour_freq]]), np.array([[400.0]]), sr)[0].max()
    )
    nasal = _resonance(freqs, np.array([[300.0]]), np.array([[200.0]]), sr)[0]
    fixed *= 1 + (10 ** (voice.nasality / 20) - 1) * nasal / nasal.max()
    table = np.ones((len(noise_specs), freqs.size))  # row 0: aspiration through the tract
    if len(noise_specs) > 1:
        spec = np.array(noise_specs[1:])
        table[1:] = _resonance(freqs, spec[:, :1], spec[:, 1:], sr)
        table[1:] *= 4.0 / table[1:].max(axis=1, keepdims=True)
    shape = noise_shape[:m]
    noise_env = np.where((shape == 0)[:, None], tract, table[shape])  # (m, bins)
    y_spec = sv * (tract * fixed * av[:m, None]).T + sn * (noise_env * fixed * an[:m, None]).T
    _, y = istft(y_spec, fs=sr, nperseg=N_FFT, noverlap=N_FFT - HOP, boundary=True)
    y = np.asarray(y[:n], dtype=np.float64)
    if y.size < n:
        y = np.pad(y, (0, n - y.size))
    fade = min(n // 4, int(0.02 * sr))
    y[-fade:] *= np.linspace(1.0, 0.0, fade)
    y = y / (np.max(np.abs(y)) + 1e-12) * rng.uniform(0.5, 0.9)
    y += 10 ** (-60 / 20) * rng.standard_normal(n)  # recording noise floor: no digital silence
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def _speaker_job(args: tuple) -> list[Utterance]:
    root, dataset, spk, voice_dict, durations, sample_rate, seed, s_idx = args
    voice = Voice(**{k: tuple(v) if isinstance(v, list) else v for k, v in voice_dict.items()})
    out = []
    for u_idx, seconds in enumerate(durations):
        rng = np.random.default_rng([seed, s_idx, u_idx, 1])
        wav = synthesize_utterance(voice, seconds, sample_rate, rng)
        utt = f"utt{u_idx:03d}"
        path = write_audio(Path(root) / dataset / spk / f"{utt}.wav", wav, sample_rate)
        out.append(
            Utterance(
                make_key(dataset, spk, utt), str(path), dataset, spk, utt, wav.size / sample_rate
            )
        )
    return out


def generate_corpus(
    root: str | Path,
    *,
    num_speakers: int = 40,
    utts_per_speaker: int = 8,
    seconds: tuple[float, float] = (2.0, 4.0),
    sample_rate: int = 16000,
    seed: int = 0,
    dataset: str = "synth",
    workers: int = 1,
) -> list[Utterance]:
    """Write ``root/<dataset>/spkNNN/uttNNN.wav`` and return the utterances (sorted by key).

    Deterministic for ``seed`` (independent of ``workers``): voices are drawn in sequence and
    kept apart (rejection of near-duplicates), each utterance has its own seeded generator and
    a duration uniform in ``seconds``.
    """
    if num_speakers < 1 or utts_per_speaker < 1:
        raise ValueError("num_speakers and utts_per_speaker must be >= 1")
    lo, hi = seconds
    if not 0 < lo <= hi:
        raise ValueError(f"seconds must be (low, high) with 0 < low <= high, got {seconds}")
    rng = np.random.default_rng(seed)
    voices: list[Voice] = []
    vecs: list[np.ndarray] = []
    for _ in range(num_speakers):
        for _attempt in range(50):
            v = sample_voice(rng)
            vec = _voice_vector(v)
            if not vecs or min(np.linalg.norm(vec - w) for w in vecs) > 1.5:
                break
        voices.append(v)
        vecs.append(vec)
    durations = rng.uniform(lo, hi, (num_speakers, utts_per_speaker))
    jobs = [
        (str(root), dataset, f"spk{s:03d}", asdict(v), list(durations[s]), sample_rate, seed, s)
        for s, v in enumerate(voices)
    ]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_speaker_job, jobs))
    else:
        results = [_speaker_job(j) for j in jobs]
    utts = sorted((u for r in results for u in r), key=lambda u: u.key)
    log.info("synthesised %d utterances of %d speakers in %s", len(utts), num_speakers, root)
    return utts

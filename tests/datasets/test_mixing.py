"""datasets.mixing: seeded TSE dynamic mixing: levels, determinism, target absence, references,
early-reflection targets, the progress ramp, HDF5 shard pools and batches."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import pickle
import sys
from fractions import Fraction
from pathlib import Path

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest
from scipy.signal import correlate, fftconvolve

from datasets.audio import load_audio, write_audio
from datasets.augment import speed_perturb
from datasets.banks import open_bank
from datasets.hdf5_shards import ShardError, pack_shards
from datasets.manifests import Utterance, scan_files, scan_tree, split_speakers
from datasets.mixing import DynamicMixer, benchmark_mixing, make_eval_set, mix_batch
from datasets.mixing_config import MixConfig, MixingError
from datasets.mixing_signal import perturbed_length, read_perturbed
from datasets.speech_pools import MemoryPool, ShardPool, speaker_split

SR = 16000
FREQS = {f"s{i}": 400.0 * (i + 1) for i in range(5)}  # one tone per "speaker": 400 .. 2000 Hz


def _tone(f: float, seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """A speaker's "utterance": its tone, amplitude-modulated like syllables."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    env = 0.4 + 0.6 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)) ** 2
    return (0.3 * env * np.sin(2 * np.pi * f * t + rng.uniform(0, 6))).astype(np.float32)


def _pool(per: int = 2) -> MemoryPool:
    return MemoryPool(
        {
            s: [_tone(f, 1.2 + 0.7 * u, 10 * i + u) for u in range(per)]
            for i, (s, f) in enumerate(FREQS.items())
        },
        sample_rate=SR,
    )


def _rir(seconds: float = 0.3, seed: int = 0, sr: int = SR, delay: int = 40) -> np.ndarray:
    """Direct path after ``delay`` samples, then an exponentially decaying diffuse tail."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    tail = 0.1 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.08 * sr))
    return np.concatenate([np.zeros(delay), [1.0], tail]).astype(np.float32)


NOISE = [np.random.default_rng(7).standard_normal(SR // 2).astype(np.float32) * 0.1]
RIRS = [_rir(seed=s) for s in range(3)]


def _cfg(**kw) -> MixConfig:
    base = {"sample_rate": SR, "segment_seconds": 1.0, "ref_seconds": 0.8}
    return MixConfig(**{**base, **kw})


def _db(a: float, b: float) -> float:
    return 10 * np.log10(a / b)


def _p(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def _si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est.astype(np.float64), ref.astype(np.float64)
    proj = ref * np.dot(est, ref) / np.dot(ref, ref)
    return _db(_p(proj), _p(est - proj))


def test_config_validation():
    cfg = MixConfig()
    assert cfg.segment_samples == 192000 and cfg.ref_samples == 192000
    assert cfg.ref_noisy_prob(0.0) == 0.0 and cfg.ref_noisy_prob(1.0) == 0.5
    for bad, match in [
        ({"target_absent_prob": 1.5}, "target_absent_prob"),
        ({"min_interferers": 3, "max_interferers": 1}, "min_interferers"),
        ({"sir_db": (5.0, -5.0)}, "sir_db"),
        ({"speed_range": (0.0, 1.1)}, "speed_range"),
        ({"peak_limit": 1.5}, "peak_limit"),
        ({"mix_level_dbfs": (-10.0, 3.0)}, "dBFS"),
        ({"min_ref_seconds": 0.0}, "min_ref_seconds"),
        ({"sample_rate": 0}, "sample_rate"),
    ]:
        with pytest.raises(ValueError, match=match):
            MixConfig(**bad)


def test_speed_span_equals_full_perturbation():
    x = (0.1 * np.random.default_rng(0).standard_normal(20000)).astype(np.float32)
    for f in (Fraction(9, 10), Fraction(107, 100), Fraction(1)):
        full = speed_perturb(x, float(f))
        m = perturbed_length(x.size, f)
        assert m == full.size
        for lo, hi in [(-50, 300), (5000, 9000), (m - 100, m + 80)]:
            want = np.zeros(hi - lo, np.float32)
            a, b = max(lo, 0), min(hi, m)
            want[a - lo : b - lo] = full[a:b]
            got = read_perturbed(lambda s, e: x[s:e], x.size, f, lo, hi)
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_realised_levels_match_drawn_and_components_sum_to_mix():
    mixer = DynamicMixer(_cfg(target_absent_prob=0.0), _pool(), NOISE, RIRS)
    for seed in range(8):
        s = mixer.mix(seed, return_components=True)
        c, info = s.components, s.info
        assert s.present and info["reverberant"]
        np.testing.assert_allclose(
            s.mix, c["target_reverberant"] + c["interferers"].sum(0) + c["noise"], atol=1e-6
        )
        p_t = _p(c["target_reverberant"])
        assert len(info["sir_db"]) == c["interferers"].shape[0] >= 1
        for drawn, reported, x in zip(
            info["sir_db"], info["sir_db_realised"], c["interferers"], strict=True
        ):
            assert -5 <= drawn <= 5
            assert abs(_db(p_t, _p(x)) - drawn) < 0.5
            assert abs(reported - drawn) < 0.5
        speech = c["target_reverberant"] + c["interferers"].sum(0)
        assert abs(_db(_p(speech), _p(c["noise"])) - info["snr_db"]) < 0.5
        assert abs(info["snr_db_realised"] - info["snr_db"]) < 0.5


def test_same_seed_same_sample_different_seed_different():
    mixer = DynamicMixer(_cfg(), _pool(), NOISE, RIRS)
    a, b, c = mixer.mix(11, 0.3), mixer.mix(11, 0.3), mixer.mix(12, 0.3)
    for name in ("mix", "target", "ref"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.info == b.info
    assert not np.array_equal(a.mix, c.mix)
    # A fresh mixer (e.g. another Ray worker) reproduces it too.
    again = DynamicMixer(_cfg(), _pool(), NOISE, RIRS).mix(11, 0.3)
    np.testing.assert_array_equal(a.mix, again.mix)


def test_lengths_dtypes_and_peak_limit():
    # Loud mixtures force the peak limiter; levels must survive the joint scaling.
    cfg = _cfg(mix_level_dbfs=(-3.0, -1.0), ref_seconds=3.0)
    mixer = DynamicMixer(cfg, _pool(), NOISE, RIRS)
    limited = 0
    for seed in range(10):
        s = mixer.mix(seed, 1.0, return_components=True)
        assert s.mix.shape == s.target.shape == (cfg.segment_samples,)
        assert s.ref.shape == (cfg.ref_samples,)  # 3 s > every utterance: zero-padded
        assert s.mix.dtype == s.target.dtype == s.ref.dtype == np.float32
        assert np.abs(s.mix).max() <= 0.95 + 1e-6 and np.abs(s.target).max() <= 0.95 + 1e-6
        assert np.abs(s.ref).max() <= 0.95 + 1e-6
        if not s.info["ref_noisy"]:  # utterances are <= 1.9 s: the clean reference is padded
            assert np.all(s.ref[-SR:] == 0) and np.abs(s.ref[: SR // 2]).max() > 0
        limited += 10 * np.log10(_p(s.mix)) < -3.01  # below the drawn level: limiter engaged
        if s.present:
            x = s.components["interferers"][0]
            assert (
                abs(_db(_p(s.components["target_reverberant"]), _p(x)) - s.info["sir_db"][0]) < 0.5
            )
    assert limited > 0


def test_target_absent_rate_and_batch_flags():
    cfg = _cfg(segment_seconds=0.25, ref_seconds=0.25, rir_prob=0.0, speed_prob=0.0)
    mixer = DynamicMixer(cfg, _pool(), NOISE, [])
    out = mix_batch(mixer, np.arange(500), 0.5)
    assert out["mix"].shape == (500, 4000) and out["ref"].shape == (500, 4000)
    assert out["present"].dtype == np.float32
    absent = int((out["present"] == 0).sum())
    # Binomial(500, 0.2): mean 100, sd 8.9; +-4 sd.
    assert 64 <= absent <= 136, absent
    assert np.all(out["target"][out["present"] == 0] == 0)
    assert np.all(np.abs(out["target"][out["present"] == 1]).max(axis=1) > 0)


def test_absent_target_leaves_no_target_energy_in_the_mixture():
    # Speakers are tones at distinct frequencies; without speed perturbation (which shifts
    # them) and with LTI reverberation, the target's frequency must be empty when it is absent.
    cfg = _cfg(target_absent_prob=1.0, speed_prob=0.0)
    mixer = DynamicMixer(cfg, _pool(), [], RIRS)
    freqs = np.fft.rfftfreq(cfg.segment_samples, 1 / SR)
    win = np.hanning(cfg.segment_samples)
    for seed in range(6):
        s = mixer.mix(seed)
        assert not s.present and np.all(s.target == 0)
        spec = np.abs(np.fft.rfft(s.mix * win)) ** 2
        near = np.abs(freqs - FREQS[s.info["target_speaker"]]) < 30
        assert spec[near].sum() / spec.sum() < 1e-4
        # The reference is still the (absent) target speaker's voice.
        ref_spec = np.abs(np.fft.rfft(s.ref)) ** 2
        ref_freqs = np.fft.rfftfreq(s.ref.size, 1 / SR)
        assert abs(ref_freqs[np.argmax(ref_spec)] - FREQS[s.info["target_speaker"]]) < 5


def test_reference_is_another_utterance_or_a_disjoint_part():
    cfg = _cfg(rir_prob=0.0, speed_prob=0.0, target_absent_prob=0.0, ref_seconds=0.5)
    multi = DynamicMixer(cfg, _pool(per=3), [], [])
    for seed in range(10):
        info = multi.mix(seed).info
        assert info["ref_key"] != info["target_key"]
        assert info["ref_key"].split("#")[0] == info["target_speaker"]
    # One utterance per speaker (like the shared LibriSpeech subset): white noise, so the
    # position of any excerpt in it can be found by correlation.
    rng = np.random.default_rng(3)
    utts = {
        f"s{i}": [0.1 * rng.standard_normal(int(1.6 * SR)).astype(np.float32)] for i in range(4)
    }
    single = DynamicMixer(cfg, MemoryPool(utts, SR), [], [])

    def locate(x: np.ndarray, src: np.ndarray) -> tuple[int, int]:
        nz = np.flatnonzero(x)
        x = x[nz[0] : nz[-1] + 1]
        pos = int(np.argmax(np.abs(correlate(src, x, mode="valid", method="fft"))))
        return pos, pos + x.size

    for seed in range(10):
        s = single.mix(seed, return_components=True)
        (src,) = utts[s.info["target_speaker"]]

        t0, t1 = locate(s.components["target_dry"], src)
        r0, r1 = locate(s.ref, src)
        assert t1 <= r0 or r1 <= t0, (t0, t1, r0, r1)
        (a0, a1), (b0, b1) = s.info["target_span"], s.info["ref_span"]
        assert a1 <= b0 or b1 <= a0
        assert r1 - r0 <= cfg.ref_samples


def test_single_utterance_too_short_for_a_reference_fails_clearly():
    utts = {f"s{i}": [np.ones(int(0.6 * SR), np.float32) * 0.1] for i in range(4)}
    with pytest.raises(MixingError, match="min_ref_seconds"):
        DynamicMixer(_cfg(min_ref_seconds=0.5), MemoryPool(utts, SR), [], [])
    with pytest.raises(MixingError, match="max_interferers"):
        DynamicMixer(_cfg(), MemoryPool({"a": [np.ones(SR)], "b": [np.ones(SR)]}, SR), [], [])


def test_progress_ramps_the_noisy_reference_rate_and_nothing_else():
    cfg = _cfg(segment_seconds=0.25, ref_seconds=0.25)
    mixer = DynamicMixer(cfg, _pool(), NOISE, RIRS)
    start = [mixer.mix(s, 0.0).info["ref_noisy"] for s in range(150)]
    end = [mixer.mix(s, 1.0).info["ref_noisy"] for s in range(150)]
    assert sum(start) == 0
    assert 45 <= sum(end) <= 105  # Binomial(150, 0.5): 75 +- 4.9 sd
    a, b = mixer.mix(5, 0.0), mixer.mix(5, 1.0)
    np.testing.assert_array_equal(a.mix, b.mix)


def test_early_reflection_target_is_closer_to_the_dry_source():
    # Broadband "speakers" (noise bursts: a tone's phase shift alone would ruin SI-SDR) and a
    # room with a direct path, two early reflections and a strong late tail from 50 ms on.
    rng = np.random.default_rng(5)
    bursts = {f"n{i}": [0.1 * rng.standard_normal(2 * SR).astype(np.float32)] for i in range(4)}
    n_late = int(0.5 * SR)
    rir = np.zeros(int(0.05 * SR) + n_late, np.float32)
    rir[0], rir[80], rir[190] = 1.0, 0.5, -0.4
    late = 0.1 * rng.standard_normal(n_late) * np.exp(-np.arange(n_late) / (0.15 * SR))
    rir[int(0.05 * SR) :] = late
    cfg = _cfg(target_absent_prob=0.0, speed_prob=0.0, ref_seconds=0.5)
    mixer = DynamicMixer(cfg, MemoryPool(bursts, SR), NOISE, [rir])
    for seed in range(4):
        s = mixer.mix(seed, return_components=True)
        c = s.components
        early = _si_sdr(s.target, c["target_dry"])
        full = _si_sdr(c["target_reverberant"], c["target_dry"])
        assert early > full + 6, (early, full)


def _check_against_full_convolution(mixer: DynamicMixer, pool: MemoryPool, s) -> None:
    """The target equals an independent full-length convolution of the whole (unperturbed)
    utterance with the early RIR, cropped afterwards: pre-crop reverberation tails included."""
    assert s.info["speed"][0] == 1.0 and s.info["reverberant"]
    a, b = s.info["target_span"]
    src = pool.load(s.info["target_key"])[a:b].astype(np.float64)
    rir = mixer.rir(s.info["rir_indices"][0])
    full = fftconvolve(src, rir.early.astype(np.float64))
    start, T = s.info["starts"][0] + rir.peak, s.target.size
    want = np.zeros(T)
    lo, hi = max(start, 0), min(start + T, full.size)
    want[lo - start : hi - start] = full[lo:hi]
    assert _si_sdr(s.target, want) > 40


def test_target_is_the_cropped_full_convolution():
    cfg = _cfg(target_absent_prob=0.0, speed_prob=0.0)
    pool = _pool()
    mixer = DynamicMixer(cfg, pool, NOISE, [_rir(0.6, seed=s) for s in range(3)])
    for seed in range(5):
        _check_against_full_convolution(mixer, pool, mixer.mix(seed))


def test_mix_batch_progress_per_row_and_eval_set():
    mixer = DynamicMixer(_cfg(segment_seconds=0.5, ref_seconds=0.5), _pool(), NOISE, RIRS)
    out = mix_batch(mixer, np.array([3, 4]), np.array([0.0, 1.0]))
    assert set(out) == {"mix", "target", "ref", "present"}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["mix"][1], mixer.mix(4, 1.0).mix)
    ev1, ev2 = make_eval_set(mixer, 3, seed=1), make_eval_set(mixer, 3, seed=1)
    assert [e.info["seed"] for e in ev1] == [e.info["seed"] for e in ev2]
    np.testing.assert_array_equal(ev1[2].mix, ev2[2].mix)
    assert make_eval_set(mixer, 3, seed=2)[0].info["seed"] != ev1[0].info["seed"]
    bench = benchmark_mixing(mixer, 2)
    assert bench["mixes_per_s"] > 0 and "reverb" in bench["stage_ms"]


def test_speaker_split_matches_split_speakers():
    speakers = [f"spk{i}" for i in range(20)]
    train, held = speaker_split(speakers, 4, seed=3)
    assert len(held) == 4 and not set(train) & set(held) and len(train) + len(held) == 20
    utts = [Utterance(s, "", "d", s, s) for s in speakers]
    assert held == [u.speaker for u in split_speakers(utts, 4, seed=3)[1]]
    with pytest.raises(MixingError, match="duplicates"):
        speaker_split(["a", "a", "b"], 1)


def test_mixer_pickles():
    mixer = DynamicMixer(_cfg(), _pool(), NOISE, RIRS)
    a = mixer.mix(2)
    clone = pickle.loads(pickle.dumps(mixer))
    np.testing.assert_array_equal(clone.mix(2).mix, a.mix)


def test_shard_pool_round_trip_at_48k(tmp_path: Path):
    sr = 48000
    for i in range(4):
        for u in range(2):
            write_audio(
                tmp_path / "wav" / f"spk{i}" / f"u{u}.wav", _tone(300 + 200 * i, 1.0, u), SR
            )
    utts = scan_tree(tmp_path / "wav", layout="speaker/utt")
    manifest = pack_shards(
        utts, tmp_path / "shards", sample_rate=sr, utts_per_shard=3, progress=False
    )
    pool = ShardPool(manifest, sample_rate=sr)
    assert pool.speakers == ["spk0", "spk1", "spk2", "spk3"] and len(pool.utterances("spk1")) == 2
    key = pool.utterances("spk2")[0]
    assert pool.num_samples(key) == sr and pool.load(key).dtype == np.float32
    np.testing.assert_array_equal(pool.load_span(key, 100, 200), pool.load(key)[100:200])
    cfg = MixConfig(segment_seconds=0.5, ref_seconds=0.5)
    mixer = DynamicMixer(cfg, pool, [np.tile(NOISE[0], 3)], [_rir(sr=sr, delay=100)])
    s = mixer.mix(4, 0.5)
    assert s.mix.shape == (24000,) and np.isfinite(s.mix).all() and np.abs(s.mix).max() > 0
    clone = pickle.loads(pickle.dumps(pool))  # after use: open HDF5 handles are dropped
    assert clone._files._files == {} and pool._files._files
    again = DynamicMixer(cfg, clone, [np.tile(NOISE[0], 3)], [_rir(sr=sr, delay=100)]).mix(4, 0.5)
    np.testing.assert_array_equal(again.mix, s.mix)
    pickle.loads(pickle.dumps(mixer))
    # A subset of speakers, and rate mismatches that say to repack.
    assert ShardPool(manifest, speakers=["spk0", "spk3"]).speakers == ["spk0", "spk3"]
    with pytest.raises(ShardError, match="not in the shards"):
        ShardPool(manifest, speakers=["nobody"])
    with pytest.raises(ShardError, match="--sample-rate 16000"):
        ShardPool(manifest, sample_rate=16000)
    with pytest.raises(MixingError, match="repack"):
        DynamicMixer(MixConfig(sample_rate=16000), pool, [], [])
    pool.close()


@pytest.mark.realdata
def test_real_librispeech_noise_and_rirs(real_data: Path):
    sr = 48000
    files = sorted((real_data / "speech" / "librispeech-train-clean-100").glob("*.flac"))[:6]
    pool = MemoryPool({f.name.split("-")[0]: [load_audio(f, sr)[0]] for f in files}, sr)
    noise = open_bank(real_data / "noise", sr)
    rirs = open_bank(real_data / "rir", sr)
    assert len(noise) == 9 and len(rirs) == 7 and len(scan_files(real_data / "rir")) == 7
    cfg = MixConfig(segment_seconds=2.0, ref_seconds=2.0, target_absent_prob=0.0, speed_prob=0.0)
    mixer = DynamicMixer(cfg, pool, noise, rirs)
    for seed in range(3):
        s = mixer.mix(seed, 1.0, return_components=True)
        assert s.mix.shape == s.target.shape == (96000,) and s.ref.shape == (96000,)
        assert np.isfinite(s.mix).all() and np.abs(s.mix).max() <= 0.95 + 1e-6
        assert np.abs(s.target).max() > 0 and s.info["reverberant"]
        for drawn, real in zip(s.info["sir_db"], s.info["sir_db_realised"], strict=True):
            assert abs(drawn - real) < 0.5
        assert abs(s.info["snr_db"] - s.info["snr_db_realised"]) < 0.5
        _check_against_full_convolution(mixer, pool, s)

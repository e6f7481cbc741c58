"""datasets.synth: determinism, format, and that speakers are separable but not identical."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import sys
import time

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest
import torch

from datasets.audio import load_audio
from datasets.manifests import scan_tree
from datasets.synth import Voice, generate_corpus, sample_voice, synthesize_utterance
from models.features import Fbank, FbankConfig


def test_utterance_shape_level_and_determinism():
    voice = sample_voice(np.random.default_rng(0))
    assert isinstance(voice, Voice)
    a = synthesize_utterance(voice, 1.5, 16000, np.random.default_rng(1))
    b = synthesize_utterance(voice, 1.5, 16000, np.random.default_rng(1))
    c = synthesize_utterance(voice, 1.5, 16000, np.random.default_rng(2))
    assert a.shape == (24000,) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.45 <= np.abs(a).max() <= 0.95 and np.isfinite(a).all()
    # not a constant tone: energy varies over time (phones and pauses)
    frames = a[: 24000 // 400 * 400].reshape(-1, 400)
    db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    assert db.max() - db.min() > 15


def test_voices_differ():
    rng = np.random.default_rng(0)
    voices = [sample_voice(rng) for _ in range(20)]
    assert len({v.f0_mean for v in voices}) == 20
    f0 = np.array([v.f0_mean for v in voices])
    assert f0.min() < 150 < f0.max()  # both low and high voices


def test_generate_corpus_deterministic(tmp_path):
    utts = generate_corpus(
        tmp_path / "a", num_speakers=3, utts_per_speaker=2, seconds=(0.5, 1.0), seed=7
    )
    again = generate_corpus(
        tmp_path / "b", num_speakers=3, utts_per_speaker=2, seconds=(0.5, 1.0), seed=7, workers=2
    )
    other = generate_corpus(
        tmp_path / "c", num_speakers=3, utts_per_speaker=2, seconds=(0.5, 1.0), seed=8
    )
    assert [u.key for u in utts] == ["synth_spk000_utt000", "synth_spk000_utt001", "synth_spk001_utt000",
                                     "synth_spk001_utt001", "synth_spk002_utt000", "synth_spk002_utt001"]  # fmt: skip
    for u, v in zip(utts, again, strict=True):
        assert open(u.path, "rb").read() == open(v.path, "rb").read()
        assert 0.5 <= u.duration <= 1.0
    assert open(utts[0].path, "rb").read() != open(other[0].path, "rb").read()
    scanned = scan_tree(tmp_path / "a")
    assert [(u.key, u.path) for u in scanned] == [(u.key, u.path) for u in utts]


def test_speakers_are_separable(tmp_path):
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    utts = generate_corpus(tmp_path, num_speakers=8, utts_per_speaker=4, seconds=(1.5, 2.5), seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, f"synthesis too slow: {elapsed:.1f} s for 32 utterances"
    fbank = Fbank(FbankConfig(mean_norm=False))
    vecs = []
    for u in utts:
        wav, _ = load_audio(u.path)
        vecs.append(fbank(torch.from_numpy(wav))[0].mean(0).numpy())
    v = np.array(vecs)
    v -= v.mean(0)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    spk = np.array([u.speaker for u in utts])
    same = spk[:, None] == spk[None, :]
    off_diag = ~np.eye(len(spk), dtype=bool)
    within, across = sim[same & off_diag].mean(), sim[~same].mean()
    assert within > across + 0.2, (within, across)
    # learnable but not trivial: utterances of one speaker are not copies
    assert sim[same & off_diag].max() < 0.999
    per_speaker = [
        sim[np.ix_(spk == s, spk == s)][~np.eye(4, dtype=bool)].mean() for s in np.unique(spk)
    ]
    assert np.mean(np.array(per_speaker) > across) >= 0.75


@pytest.mark.parametrize("bad", [(0.0, 1.0), (2.0, 1.0)])
def test_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError):
        generate_corpus(tmp_path, num_speakers=1, utts_per_speaker=1, seconds=bad)

"""models.pipelines.classify: SoundClassifier from checkpoints, multi-crop protocol, input errors."""

from __future__ import annotations

import sys

sys.modules.setdefault("ray", None)  # models/ must import without Ray

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from models import build_model  # noqa: E402
from models.checkpoint import CheckpointError, save_checkpoint  # noqa: E402
from models.pipelines.classify import (  # noqa: E402
    SoundClassifier,
    multi_crop,
    trim_zeros,
)
from models.waveform import AudioError  # noqa: E402

torch.set_num_threads(2)
L = 30225
CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("acdnet-tiny")
    path = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt", {"classes": CLASSES})
    return SoundClassifier.from_checkpoint(path, n_crops=3)


def _noise(seconds: float, sr: int = 20000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def test_from_checkpoint_names_and_top_k(classifier, tmp_path):
    out = classifier(_noise(2.0), 20000, top_k=4)
    assert len(out) == 4
    assert all(label in CLASSES for label, _ in out)
    probs = [p for _, p in out]
    assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
    full = classifier(_noise(2.0), 20000, top_k=100)  # clipped to the number of classes
    assert len(full) == 10 and sum(p for _, p in full) == pytest.approx(1.0, abs=1e-5)
    # without meta["classes"], labels are indices
    path = save_checkpoint(build_model("acdnet-tiny"), tmp_path / "bare.pt")
    assert SoundClassifier.from_checkpoint(path)(_noise(1.0), 20000, top_k=1)[0][0] in {
        str(i) for i in range(10)
    }


def test_prediction_is_the_crop_average(classifier):
    wav = _noise(2.5)
    crops = multi_crop(torch.from_numpy(wav), L, 3)
    with torch.no_grad():
        expected = classifier.model(crops).softmax(-1).mean(0)
    got = classifier.predict_proba([wav], 20000)[0]
    torch.testing.assert_close(got, expected)


def test_multi_crop_matches_dataset_protocol():
    from datasets.esc50 import multi_crop as np_multi_crop

    wav = np.random.default_rng(1).standard_normal(43210).astype(np.float32)
    torch.testing.assert_close(
        multi_crop(torch.from_numpy(wav), L, 10), torch.from_numpy(np_multi_crop(wav, L, 10))
    )
    assert trim_zeros(torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 0.0])).tolist() == [1.0, 0.0, 2.0]


def test_batch_equals_singles_and_resampling(classifier):
    wavs = [_noise(1.0, seed=1), _noise(3.0, seed=2)]
    batch = classifier.classify_batch(wavs, 20000, top_k=3)
    singles = [classifier(w, 20000, top_k=3) for w in wavs]
    for b, s in zip(batch, singles, strict=True):
        assert [lab for lab, _ in b] == [lab for lab, _ in s]
        np.testing.assert_allclose([p for _, p in b], [p for _, p in s], rtol=1e-4, atol=1e-6)
    assert classifier.classify_batch([], 20000) == []
    # 44.1 kHz stereo input: resampled and mixed down, same output shape
    stereo = np.stack([_noise(1.0, 44100, 3), _noise(1.0, 44100, 4)])
    assert len(classifier(stereo, 44100, top_k=2)) == 2


def test_short_clip_is_padded(classifier):
    short = _noise(0.2)  # much shorter than the 1.51 s input
    probs = classifier.predict_proba([short], 20000)
    assert probs.shape == (1, 10) and torch.isfinite(probs).all()


@pytest.mark.parametrize(
    ("wav", "sr", "match"),
    [
        (np.zeros(0, np.float32), 20000, "empty"),
        (np.zeros(40000, np.float32), 20000, "silent"),
        (np.full(40000, np.nan, np.float32), 20000, "NaN"),
        (np.ones(100, np.float32), 20000, "shorter than"),
        (np.ones((2, 3, 4), np.float32), 20000, "expected a"),
        (np.ones(40000, np.float32), 0, "sample rate"),
    ],
)
def test_bad_inputs_raise(classifier, wav, sr, match):
    with pytest.raises(AudioError, match=match):
        classifier(wav, sr)


def test_wrong_family_and_class_count(tmp_path):
    with pytest.raises(ValueError, match="3 class names"):
        SoundClassifier(build_model("acdnet-tiny"), ["a", "b", "c"])
    path = save_checkpoint(build_model("campplus-tiny"), tmp_path / "spk.pt")
    with pytest.raises(CheckpointError, match="classify-family"):
        SoundClassifier.from_checkpoint(path)

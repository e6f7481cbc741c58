"""datasets.esc50: reading ESC-50-format folders, folds, ACDNet preprocessing, BC mixing."""

from __future__ import annotations

import sys

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

from datasets.esc50 import (  # noqa: E402
    Clip,
    ESC50Error,
    ESC50Preprocess,
    bc_mix,
    class_names,
    cross_validation,
    folds,
    load_clip,
    make_eval_batch,
    make_training_batch,
    multi_crop,
    random_crop,
    read_esc50,
    sound_gain_db,
    trim_silence,
)

HEADER = "filename,fold,target,category,esc10,src_file,take\n"
L = 30225


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_folder(root, rows, sr=44100, seconds=1.0, meta="meta.csv", header=HEADER):
    """Write an ESC-50-format folder: audio/<name>.wav (tone with 0.2 s silence each side)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    lines = [header]
    for name, fold, target, category in rows:
        pad = np.zeros(int(0.2 * sr), np.float32)
        wav = np.concatenate([pad, _tone(200 + 100 * target, seconds, sr), pad])
        sf.write(root / "audio" / name, wav, sr, subtype="PCM_16")
        lines.append(f"{name},{fold},{target},{category},False,1,A\n")
    (root / meta).parent.mkdir(parents=True, exist_ok=True)
    (root / meta).write_text("".join(lines))
    return root


ROWS = [
    ("1-1-A-0.wav", 1, 0, "dog"),
    ("1-2-A-1.wav", 1, 1, "rooster"),
    ("2-3-A-0.wav", 2, 0, "dog"),
    ("2-4-A-2.wav", 2, 2, "pig"),
    ("3-5-A-1.wav", 3, 1, "rooster"),
]


def test_read_esc50_sorted_and_validated(tmp_path):
    make_folder(tmp_path, ROWS)
    clips = read_esc50(tmp_path)
    assert [c.fold for c in clips] == [1, 1, 2, 2, 3]
    assert clips[0] == Clip(str(tmp_path / "audio" / "1-1-A-0.wav"), 1, 0, "dog")
    assert class_names(clips) == ["dog", "rooster", "pig"]
    assert class_names(clips, 5) == ["dog", "rooster", "pig", "3", "4"]


def test_read_esc50_official_layout(tmp_path):
    make_folder(tmp_path, ROWS[:2], meta="meta/esc50.csv")
    assert len(read_esc50(tmp_path)) == 2


@pytest.mark.parametrize(
    ("header", "row", "match"),
    [
        ("filename,fold,category\n", None, "missing column.*target"),
        (
            HEADER,
            "1-2-A-1.wav,one,1,rooster,False,1,A\n",
            r"meta.csv:3: fold .one. is not an integer",
        ),
        (HEADER, "1-1-A-0.wav,1,0,dog,False,1,A\n", r"meta.csv:3: 1-1-A-0.wav is listed twice"),
        (
            HEADER,
            "9-9-A-0.wav,1,0,dog,False,1,A\n",
            r"meta.csv:3: audio file .*9-9-A-0.wav is missing",
        ),
        (HEADER, "1-2-A-1.wav,1,0,cat,False,1,A\n", "target 0 is 'cat' here but 'dog' on line 2"),
        (HEADER, "1-2-A-1.wav,0,1,rooster,False,1,A\n", "fold 0 must be >= 1"),
    ],
)
def test_read_esc50_errors_name_file_and_line(tmp_path, header, row, match):
    make_folder(tmp_path, ROWS[:2])
    meta = tmp_path / "meta.csv"
    if row is None:
        meta.write_text(header + "1-1-A-0.wav,1,dog\n")
    else:
        meta.write_text(header + "1-1-A-0.wav,1,0,dog,False,1,A\n" + row)
    with pytest.raises(ESC50Error, match=match):
        read_esc50(tmp_path)


def test_read_esc50_missing_meta_and_root(tmp_path):
    (tmp_path / "audio").mkdir()
    with pytest.raises(ESC50Error, match="no meta CSV"):
        read_esc50(tmp_path)
    with pytest.raises(ESC50Error, match="no such folder"):
        read_esc50(tmp_path / "nope")


def test_folds_hold_out_one_fold(tmp_path):
    clips = read_esc50(make_folder(tmp_path, ROWS))
    train, val = folds(clips, 2)
    assert {c.fold for c in val} == {2} and len(val) == 2
    assert {c.fold for c in train} == {1, 3} and len(train) == 3
    runs = cross_validation(clips)
    assert [k for k, _ in runs] == [1, 2, 3]
    assert sorted(c.path for _, s in runs for c in s.val) == sorted(c.path for c in clips)
    with pytest.raises(ESC50Error, match="fold 4 has no clips"):
        folds(clips, 4)


def test_load_clip_trims_silence_and_resamples(tmp_path):
    clips = read_esc50(make_folder(tmp_path, ROWS[:1], sr=44100, seconds=1.0))
    wav = load_clip(clips[0])
    assert wav.dtype == np.float32 and wav.ndim == 1
    # 1 s of tone at 20 kHz; the 0.2 s zero padding on each side is gone
    assert abs(wav.shape[0] - 20000) <= 20
    assert np.abs(wav).max() <= 1.0 and np.abs(wav[:200]).max() > 0.01
    assert trim_silence(np.zeros(5, np.float32)).shape == (5,)


def test_crops_follow_reference_protocol():
    rng = np.random.default_rng(0)
    wav = np.arange(1, 40001, dtype=np.float32)
    padded_len = 40000 + 2 * (L // 2)
    crops = multi_crop(wav, L, 10)
    assert crops.shape == (10, L)
    stride = (padded_len - L) // 9
    assert crops[0, L // 2] == 1.0 and crops[0, 0] == 0.0  # first crop starts in the padding
    assert crops[1, 0] == crops[0, stride]
    crop = random_crop(wav, L, rng)
    assert crop.shape == (L,)
    short = multi_crop(np.ones(100, np.float32), L, 10)  # short clips are zero padded
    assert short.shape == (10, L) and short.sum() == 1000


def test_bc_mix_balances_gains():
    sr = 20000
    loud, quiet = _tone(440, 1.5, sr, 0.8), _tone(440, 1.5, sr, 0.008)
    assert sound_gain_db(loud, sr) - sound_gain_db(quiet, sr) == pytest.approx(40, abs=0.1)
    mixed = bc_mix(loud, quiet, 0.5, sr)
    # equal perceived share: the quiet clip gets a ~100x larger coefficient
    p = 1 / (1 + 10 ** (40 / 20))
    expected = (loud * p + quiet * (1 - p)) / np.sqrt(p**2 + (1 - p) ** 2)
    np.testing.assert_allclose(mixed, expected, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(bc_mix(loud, quiet, 1.0, sr), loud, atol=1e-4)


def test_make_training_batch_bc_labels_and_shapes():
    rng = np.random.default_rng(0)
    cfg = ESC50Preprocess(num_classes=5)
    waves = [_tone(300 + 50 * i, 2.0, 20000) for i in range(4)]
    targets = np.array([0, 1, 1, 3])
    out = make_training_batch({"wav": waves, "target": targets}, cfg, rng)
    assert out["wav"].shape == (4, L) and out["wav"].dtype == np.float32
    label = out["label"]
    assert label.shape == (4, 5) and label.dtype == np.float32
    np.testing.assert_allclose(label.sum(1), 1.0, rtol=1e-6)
    for i, t in enumerate(targets):
        assert label[i, t] > 0
        assert np.count_nonzero(label[i]) == 2  # always mixed with a different class
    assert label[:, [2, 4]].sum() == 0  # classes absent from the batch get nothing


def test_make_training_batch_modes():
    rng = np.random.default_rng(1)
    waves = [_tone(300, 2.0, 20000), _tone(500, 2.0, 20000)]
    plain = ESC50Preprocess(num_classes=3, mix="none", max_scale=1.0, gain_db=0.0)
    out = make_training_batch({"wav": waves, "target": np.array([0, 2])}, plain, rng)
    np.testing.assert_array_equal(out["label"], np.eye(3, dtype=np.float32)[[0, 2]])
    assert np.abs(out["wav"]).max() <= 0.3 + 1e-6  # neither gain nor mixing
    same = ESC50Preprocess(num_classes=3)
    out = make_training_batch({"wav": waves, "target": np.array([1, 1])}, same, rng)
    np.testing.assert_array_equal(out["label"][:, 1], [1.0, 1.0])  # one class: nothing to mix
    with pytest.raises(ESC50Error, match="outside 0..2"):
        make_training_batch({"wav": waves, "target": np.array([0, 3])}, same, rng)


def test_make_eval_batch():
    cfg = ESC50Preprocess(num_classes=3, n_crops=4)
    out = make_eval_batch({"wav": [np.ones(50000, np.float32)] * 2, "target": [2, 0]}, cfg)
    assert out["wav"].shape == (2, 4, L)
    np.testing.assert_array_equal(out["label"], [2, 0])


@pytest.mark.realdata
def test_real_esc50_folder(real_data):
    clips = read_esc50(real_data / "sound-events" / "esc50")
    assert len(clips) == 7
    assert {c.target for c in clips} == {0, 2, 19, 33, 43}
    names = class_names(clips, 50)
    assert names[19] == "thunderstorm" and names[0] == "dog"
    train, val = folds(clips, 4)
    assert len(val) == 2 and len(train) == 5
    wav = load_clip(clips[0])
    assert wav.dtype == np.float32 and 0 < wav.shape[0] <= 5 * 20000 + 10
    assert make_eval_batch({"wav": [wav], "target": [clips[0].target]}, ESC50Preprocess())[
        "wav"
    ].shape == (1, 10, L)

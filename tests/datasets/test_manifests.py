"""datasets.manifests: tree layouts, file-name patterns, Kaldi, CSV, splits."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import sys
from pathlib import Path

sys.modules.setdefault("ray", None)  # this module must work without Ray

import numpy as np
import pytest

from datasets.audio import write_audio
from datasets.manifests import (
    FILENAME_PATTERNS,
    ManifestError,
    Utterance,
    read_kaldi,
    read_manifest_csv,
    scan_filename_pattern,
    scan_files,
    scan_tree,
    speaker_index,
    split_speakers,
    write_manifest_csv,
)
from tests.conftest import REAL, needs_real


def _wav(path: Path, seconds: float = 0.1) -> Path:
    return write_audio(path, np.full(int(16000 * seconds), 0.1, np.float32), 16000)


def test_dataset_speaker_utt_layout(tmp_path):
    for ds, spk, utt in [("vox", "id1", "a"), ("vox", "id2", "b"), ("libri", "103", "x")]:
        _wav(tmp_path / ds / spk / f"{utt}.wav")
    _wav(tmp_path / "vox" / "id1" / "yt123" / "00001.wav")  # VoxCeleb-style sub-folder
    (tmp_path / "vox" / "README.txt").write_text("not audio")
    utts = scan_tree(tmp_path)
    keys = [u.key for u in utts]
    assert keys == sorted(keys)
    assert keys == ["libri_103_x", "vox_id1_a", "vox_id1_yt123-00001", "vox_id2_b"]
    u = utts[2]
    assert (u.dataset, u.speaker, u.utterance) == ("vox", "id1", "yt123-00001")
    assert scan_tree(tmp_path, layout="dataset/speaker/utt") == utts
    assert scan_tree(tmp_path) == utts  # deterministic


def test_speaker_utt_layout_and_durations(tmp_path):
    root = tmp_path / "mycorpus"
    _wav(root / "alice" / "1.wav", 0.5)
    _wav(root / "bob" / "2.flac".replace(".flac", ".wav"), 0.25)
    _wav(root / "bob" / "sess" / "3.wav")
    utts = scan_tree(root, with_durations=True)
    assert [u.key for u in utts] == ["mycorpus_alice_1", "mycorpus_bob_2", "mycorpus_bob_sess-3"]
    assert utts[0].duration == pytest.approx(0.5)
    # forcing the layout on the same tree reads it the VoxCeleb way
    assert len(scan_tree(root, layout="speaker/utt")) == 3


def test_scan_tree_errors(tmp_path):
    with pytest.raises(ManifestError, match="not a folder"):
        scan_tree(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        scan_tree(tmp_path / "empty")
    with pytest.raises(ManifestError, match="unknown layout"):
        scan_tree(tmp_path / "empty", layout="speaker")  # type: ignore[arg-type]
    _wav(tmp_path / "dup" / "ds" / "s" / "u.wav")
    (tmp_path / "dup" / "ds" / "s" / "u.flac").write_bytes(b"x")
    with pytest.raises(ManifestError, match="duplicate"):
        scan_tree(tmp_path / "dup")


def test_scan_filename_pattern(tmp_path):
    root = tmp_path / "libri"
    for name in ["103-1240-0000.flac", "103-1240-0001.flac", "1034-121119-0000.flac"]:
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "SPEAKERS.TXT").write_text("ignored: not audio")
    utts = scan_filename_pattern(root, "librispeech")
    assert sorted(u.speaker for u in utts) == ["103", "103", "1034"]
    assert utts[1].key == "libri_103_103-1240-0000"  # sorted by key: "1034_" < "103_"
    utts = scan_filename_pattern(root, r"^(?P<speaker>\d+)-(?P<chapter>\d+)", dataset="ls")
    assert utts[0].dataset == "ls"
    (root / "odd.flac").write_bytes(b"")
    with pytest.raises(ManifestError, match="does not match"):
        scan_filename_pattern(root, "librispeech")
    with pytest.raises(ManifestError, match="speaker"):
        scan_filename_pattern(root, r"^\d+")


def test_scan_files_for_banks(tmp_path):
    _wav(tmp_path / "noise" / "hum.wav")
    _wav(tmp_path / "noise" / "street" / "car.wav")
    utts = scan_files(tmp_path / "noise")
    assert [(u.speaker, u.key) for u in utts] == [
        ("hum", "noise_hum_hum"),
        ("street-car", "noise_street-car_street-car"),
    ]


def test_read_kaldi(tmp_path):
    scp, u2s = tmp_path / "wav.scp", tmp_path / "utt2spk"
    scp.write_text("spkA-u1 /data/a/u1.wav\nspkB-u2 /data/b/u2.flac\n\n")
    u2s.write_text("spkA-u1 spkA\nspkB-u2 spkB\n")
    utts = read_kaldi(scp, u2s, dataset="vc")
    assert [u.key for u in utts] == ["vc_spkA_spkA-u1", "vc_spkB_spkB-u2"]
    assert utts[1].path == "/data/b/u2.flac"
    scp.write_text("spkA-u1 sox /data/a/u1.wav -t wav - |\n")
    with pytest.raises(ManifestError, match="pipe command"):
        read_kaldi(scp, u2s)
    scp.write_text("spkC-u3 /data/c.wav\n")
    with pytest.raises(ManifestError, match="missing from"):
        read_kaldi(scp, u2s)


def test_csv_roundtrip(tmp_path):
    utts = [
        Utterance("d_s1_u1", "/x/u1.wav", "d", "s1", "u1", 1.25),
        Utterance("d_s2_u2", "/x/a,b.wav", "d", "s2", "u2", None),
    ]
    path = write_manifest_csv(utts, tmp_path / "m.csv")
    assert read_manifest_csv(path) == utts
    (tmp_path / "bad.csv").write_text("path,speaker\n/x.wav,s\n")
    with pytest.raises(ManifestError, match="bad CSV header"):
        read_manifest_csv(tmp_path / "bad.csv")


def _utts(n_spk: int, per: int) -> list[Utterance]:
    return [
        Utterance(f"d_s{s:02d}_u{u}", f"/x/{s}/{u}.wav", "d", f"s{s:02d}", f"u{u}")
        for s in range(n_spk)
        for u in range(per)
    ]


def test_speaker_index_and_split():
    utts = _utts(10, 3)
    idx = speaker_index(utts)
    assert idx == {f"s{s:02d}": s for s in range(10)}
    train, held = split_speakers(utts, 0.3, seed=1)
    assert len({u.speaker for u in held}) == 3 and len(train) + len(held) == len(utts)
    assert not {u.speaker for u in train} & {u.speaker for u in held}
    assert split_speakers(utts, 0.3, seed=1) == (train, held)
    assert split_speakers(utts, 0.3, seed=2) != (train, held)
    assert len({u.speaker for u in split_speakers(utts, 4, seed=0)[1]}) == 4
    with pytest.raises(ManifestError):
        split_speakers(utts, 10)
    with pytest.raises(ManifestError):
        split_speakers(utts, 1.5)


@pytest.mark.realdata
@needs_real
@pytest.mark.parametrize(
    "folder, pattern, n_spk, n_utt",
    [
        ("librispeech-train-clean-100", "librispeech", 251, 251),
        ("fsdd", "fsdd", 6, 600),
        ("cmu-arctic", "cmu-arctic", 2, 6),
    ],
)
def test_real_filename_patterns(folder, pattern, n_spk, n_utt):
    assert pattern in FILENAME_PATTERNS
    utts = scan_filename_pattern(REAL / "speech" / folder, pattern)
    assert len(utts) == n_utt and len({u.speaker for u in utts}) == n_spk
    assert all(Path(u.path).is_file() for u in utts)

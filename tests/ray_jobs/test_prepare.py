"""Training-data preparation: held-out speakers, segmenting, packing, sources with layouts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.modules.setdefault("ray", None)

from datasets.manifests import scan_source  # noqa: E402
from datasets.synth import generate_corpus  # noqa: E402
from ray_jobs.train.experiment import DataConfig  # noqa: E402
from ray_jobs.train.prepare import prepare_speaker_data, segment_utterances  # noqa: E402


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    generate_corpus(root, num_speakers=6, utts_per_speaker=2, seconds=(3.2, 4.5), seed=5)
    return root


def test_held_out_speakers_are_disjoint_and_segmented(tree, tmp_path):
    cfg = DataConfig(train=str(tree), val_speakers=2, val_segment_seconds=1.5)
    data = prepare_speaker_data(cfg, tmp_path)
    val_speakers = {u.speaker for u in data.val_utterances}
    assert len(data.speakers) == 4 and len(val_speakers) == 2
    assert not val_speakers & set(data.speakers)
    # 2 utterances of 3.2-4.5 s per held-out speaker -> 2 segments of 1.5 s each
    assert len(data.val_utterances) == 2 * 2 * 2
    for u in data.val_utterances:
        wav, sr = sf.read(u.path)
        assert sr == 16000 and len(wav) == 24000 and u.key.endswith(u.utterance)
    # rerun reuses the packed shards and gives the same split
    again = prepare_speaker_data(cfg, tmp_path)
    assert again.speakers == data.speakers and again.shards == data.shards


def test_segments_drop_short_tails(tmp_path):
    src = tmp_path / "d" / "spk" / "u.wav"
    src.parent.mkdir(parents=True)
    sf.write(src, np.zeros(16000 * 5 + 100, dtype=np.float32) + 0.1, 16000)
    (u,) = scan_source(tmp_path / "d", "speaker/utt")
    segs = segment_utterances([u], tmp_path / "segs", 2.0, 16000)
    assert [s.utterance for s in segs] == ["u-s00", "u-s01"]


def test_sources_with_layouts(tree, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    sf.write(flat / "7_alice_0.wav", np.full(8000, 0.1, dtype=np.float32), 8000)
    utts = scan_source(f"{tree}@dataset/speaker/utt,{flat}@fsdd")
    assert {u.speaker for u in utts} >= {"alice"} and len(utts) == 13


def test_too_few_speakers_and_no_data_fail_clearly(tree, tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        prepare_speaker_data(DataConfig(), tmp_path)
    with pytest.raises(ValueError, match="at least 2 speakers"):
        prepare_speaker_data(DataConfig(train=str(tree), val_speakers=5), tmp_path / "o")


def test_unknown_layout_names_the_valid_ones(tree):
    from datasets.manifests import ManifestError

    with pytest.raises(ManifestError, match="unknown layout 'nope'.*speaker/utt.*librispeech"):
        scan_source(tree, "nope")


def test_bank_folders_are_packed_once_for_on_demand_reads(tmp_path):
    from datasets.audio import write_audio
    from datasets.banks import ShardBank, open_bank
    from ray_jobs.train.prepare import prepare_bank

    for i in range(2):
        write_audio(tmp_path / "noise" / f"n{i}.wav", np.full(8000, 0.1 * (i + 1)), 8000)
    assert prepare_bank("", "noise", 16000, tmp_path / "out") == ""
    manifest = prepare_bank(str(tmp_path / "noise"), "noise", 16000, tmp_path / "out")
    assert Path(manifest).parent.parent == tmp_path / "out" / "banks"
    bank = open_bank(manifest, 16000)
    assert isinstance(bank, ShardBank) and [bank.length(i) for i in range(2)] == [16000, 16000]
    assert prepare_bank(manifest, "noise", 16000, tmp_path / "x") == manifest  # packed: as is
    mtime = Path(manifest).stat().st_mtime_ns
    assert prepare_bank(str(tmp_path / "noise"), "noise", 16000, tmp_path / "out") == manifest
    assert Path(manifest).stat().st_mtime_ns == mtime  # reused, not rewritten
    write_audio(tmp_path / "noise" / "n2.wav", np.full(800, 0.1), 8000)  # the folder changed
    assert (
        len(
            open_bank(
                prepare_bank(str(tmp_path / "noise"), "noise", 16000, tmp_path / "out"), 16000
            )
        )
        == 3
    )
    with pytest.raises(ValueError, match="not a folder"):
        prepare_bank(str(tmp_path / "missing"), "rir", 16000, tmp_path / "out")


@pytest.mark.realdata
def test_flat_unlabelled_folders_are_codec_input(real_data, tmp_path):
    """ESC-50's audio/ (flat, no speakers) and its root (one folder, audio/) are codec-training
    input: every clip is packed, held-out clips are disjoint; a speaker task still refuses."""
    esc = real_data / "sound-events" / "esc50"
    clips = sorted(p.name for p in (esc / "audio").glob("*.wav"))
    assert len(clips) >= 4
    for root in (esc / "audio", esc):
        cfg = DataConfig(train=str(root), val_speakers=1, sample_rate=16000)
        data = prepare_speaker_data(cfg, tmp_path / root.name, unlabelled=True)
        held = {Path(u.path).name for u in data.val_utterances}
        assert data.num_utterances == len(clips) - 1 and len(held) == 1
        names = {f"{s.removeprefix('audio-')}.wav" for s in data.speakers}  # esc50/: audio-<clip>
        assert names | held == set(clips)
    with pytest.raises(ValueError, match="no audio files found"):
        prepare_speaker_data(DataConfig(train=str(esc / "audio")), tmp_path / "spk")
    # any command that reads sources takes it explicitly too (pack, evaluate, extract)
    assert len(scan_source(esc / "audio", "files")) == len(clips)

"""ray_jobs.evaluate (speaker): trials parsing, pair sampling, evaluate_tree and the CLI on a tiny tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import models
from datasets.audio import load_audio, write_audio
from datasets.manifests import scan_tree
from models.features import FbankConfig
from models.metrics import verification_metrics
from models.pipelines.speaker import SpeakerEmbedder
from ray_jobs.evaluate.cli import main
from ray_jobs.evaluate.speaker import Trial, evaluate_tree, parse_trials

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[2]
SPEAKER_F0 = {"spk0": 180.0, "spk1": 310.0, "spk2": 520.0, "spk3": 870.0}
UTTS_PER_SPEAKER = 3


class SpectralShape(nn.Module):
    """Oracle "speaker model": the time-averaged log-mel spectrum, centred. Speakers here are
    tones at distinct pitches, so same-speaker clips have the same shape: EER must be 0."""

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, 55)
        m = feats[:, :, :55].mean(dim=1)  # bins below ~3.5 kHz: the 8 kHz clip has nothing above 4
        return m - m.mean(dim=-1, keepdim=True)


def _tone(f0: float, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = sum(
        rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) for h in (1, 2)
    )
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``toy/spkN/uttK.wav``: 4 speakers x 3 clips of 0.3-0.8 s, one of them stored at 8 kHz."""
    root = tmp_path_factory.mktemp("data") / "toy"
    rng = np.random.default_rng(0)
    for spk, f0 in SPEAKER_F0.items():
        for k in range(UTTS_PER_SPEAKER):
            sr = 8000 if (spk, k) == ("spk1", 2) else 16000
            write_audio(root / spk / f"utt{k}.wav", _tone(f0, rng.uniform(0.3, 0.8), sr, rng), sr)
    return root


@pytest.fixture(scope="module")
def oracle() -> SpeakerEmbedder:
    return SpeakerEmbedder(SpectralShape(), fbank=FbankConfig(mean_norm=False), model_id="oracle")


def _reference(embedder, utts, pairs, labels):
    """Metrics computed the slow obvious way: embed each file alone, score each pair."""
    emb = {u.key: embedder.embed(*load_audio(u.path)) for u in utts}
    scores = [float(emb[a] @ emb[b]) for a, b in pairs]
    return verification_metrics(scores, labels)


def test_parse_trials_both_layouts():
    trials = parse_trials(
        [
            "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
            "0 a.wav b.wav",
            "# comment",
            "",
            "utt_a utt_b target",
            "utt_a utt_c nontarget",
        ]
    )
    assert trials == [
        Trial("id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav", True),
        Trial("a.wav", "b.wav", False),
        Trial("utt_a", "utt_b", True),
        Trial("utt_a", "utt_c", False),
    ]
    with pytest.raises(ValueError, match="no label"):
        parse_trials(["a b c"])
    with pytest.raises(ValueError, match="expected"):
        parse_trials(["1 a"])
    with pytest.raises(ValueError, match="no trials"):
        parse_trials(["# nothing"])


def test_evaluate_tree_all_pairs(tree, oracle):
    utts = scan_tree(tree, with_durations=True)
    assert len(utts) == 12
    result = evaluate_tree(oracle, utts)
    n = len(utts)
    assert result["num_trials"] == n * (n - 1) // 2
    assert result["num_target"] == len(SPEAKER_F0) * 3  # C(3, 2) per speaker
    assert result["trials_source"] == "all_pairs"
    assert result["num_speakers"] == 4 and result["num_failed_utterances"] == 0
    assert result["eer"] == 0.0 and result["min_dcf_0.01"] == 0.0
    pairs = list(combinations(range(n), 2))
    labels = [utts[i].speaker == utts[j].speaker for i, j in pairs]
    ref = _reference(oracle, utts, [(utts[i].key, utts[j].key) for i, j in pairs], labels)
    for key in ("eer", "min_dcf_0.01", "min_dcf_0.05", "num_target"):
        assert result[key] == pytest.approx(ref[key], abs=1e-6)

    sampled = evaluate_tree(oracle, utts, max_trials=20, seed=1)
    assert sampled["trials_source"] == "sampled_pairs"
    assert (sampled["num_trials"], sampled["num_target"]) == (20, 10)

    one_speaker = [u for u in utts if u.speaker == "spk0"]
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_tree(oracle, one_speaker)


def test_evaluate_tree_with_trials_names(tree, oracle):
    utts = scan_tree(tree)
    # VoxCeleb-style relative paths, manifest keys, and paths without extension
    trials = parse_trials(
        [
            "1 spk0/utt0.wav spk0/utt1.wav",
            "0 spk0/utt0.wav spk1/utt2.wav",
            "toy_spk2_utt0 toy_spk2_utt2 target",
            "toy_spk2_utt0 toy_spk3_utt1 nontarget",
            "1 toy/spk3/utt0 spk3/utt2.wav",
            "0 spk1/utt0.wav spk3/utt2.wav",
        ]
    )
    result = evaluate_tree(oracle, utts, trials)
    assert result["trials_source"] == "file"
    assert (result["num_trials"], result["num_target"]) == (6, 3)
    assert result["num_utterances"] == 9  # only what the trials name is embedded
    assert result["eer"] == 0.0
    by_key = {u.key: u for u in utts}
    pairs = [
        ("toy_spk0_utt0", "toy_spk0_utt1"),
        ("toy_spk0_utt0", "toy_spk1_utt2"),
        ("toy_spk2_utt0", "toy_spk2_utt2"),
        ("toy_spk2_utt0", "toy_spk3_utt1"),
        ("toy_spk3_utt0", "toy_spk3_utt2"),
        ("toy_spk1_utt0", "toy_spk3_utt2"),
    ]
    ref = _reference(oracle, list(by_key.values()), pairs, [t.target for t in trials])
    assert result["eer_threshold"] == pytest.approx(ref["eer_threshold"], abs=1e-5)

    with pytest.raises(ValueError, match="not in the data tree"):
        evaluate_tree(oracle, utts, parse_trials(["1 spk0/utt0.wav spk9/utt0.wav"]))
    with pytest.raises(ValueError, match="ambiguous"):
        evaluate_tree(oracle, utts, parse_trials(["1 utt0.wav spk0/utt1.wav"]))


def _checkpoint(tmp_path: Path) -> Path:
    known = set(models.list_presets())
    preset = next(
        (p for p in ("xvector-tiny", "campplus-tiny", "ecapa_tdnn-tiny") if p in known), None
    )
    if preset is None:
        pytest.skip("no registered speaker preset yet")
    torch.manual_seed(0)
    return models.save_checkpoint(models.build_model(preset), tmp_path / "model.pt")


def test_cli_json_and_report(tree, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    assert main(["--checkpoint", str(ckpt), "--data-root", str(tree), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # exactly one JSON object on stdout
    assert result["num_trials"] == 66 and result["num_target"] == 12
    for key in ("eer", "min_dcf_0.01", "min_dcf_0.05"):
        assert 0.0 <= result[key] <= 1.0
    embedder = SpeakerEmbedder.from_checkpoint(ckpt)
    assert result["model_id"] == embedder.model_id
    direct = evaluate_tree(embedder, scan_tree(tree, with_durations=True))
    assert result["eer"] == pytest.approx(direct["eer"], abs=1e-6)

    trials = tmp_path / "trials.txt"
    trials.write_text("1 spk0/utt0.wav spk0/utt2.wav\n0 spk0/utt0.wav spk2/utt1.wav\n")
    argv = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--trials", str(trials)]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "EER" in report and "2 (1 target, 1 non-target; file)" in report


def test_cli_bad_input_exits_nonzero(tree, tmp_path, caplog, capsys):
    ckpt = _checkpoint(tmp_path)
    assert main(["--checkpoint", str(tmp_path / "nope.pt"), "--data-root", str(tree)]) == 2
    assert "does not exist" in caplog.text
    caplog.clear()
    lonely = tmp_path / "lonely"
    write_audio(lonely / "spk0" / "a.wav", np.zeros(8000, np.float32), 16000)
    write_audio(lonely / "spk0" / "b.wav", np.zeros(8000, np.float32), 16000)
    assert main(["--checkpoint", str(ckpt), "--data-root", str(lonely)]) == 2
    assert "at least 2" in caplog.text
    caplog.clear()
    assert main(["--checkpoint", str(ckpt), "--data-root", str(tmp_path / "none")]) == 2
    assert "not a folder" in caplog.text
    bad = tmp_path / "bad_trials.txt"
    bad.write_text("maybe spk0/utt0.wav spk1/utt0.wav\n")
    argv = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--trials", str(bad)]
    assert main(argv) == 2
    assert capsys.readouterr().out == ""  # nothing on stdout on failure


def test_cli_module_runs_without_ray(tree, tmp_path):
    ckpt = _checkpoint(tmp_path)
    code = (
        "import sys, runpy; sys.modules['ray'] = None; "
        "sys.argv = ['evaluate'] + sys.argv[1:]; "
        "runpy.run_module('ray_jobs.evaluate', run_name='__main__')"
    )
    args = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--json", "--max-trials", "30"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a fresh process on a shared 2-core box
    res = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["num_trials"] == 30 and result["trials_source"] == "sampled_pairs"


def test_asnorm_scores_file_and_calibration_record(tree, tmp_path, oracle, capsys):
    """AS-norm against a cohort of other voices, the per-trial score file, and the
    calibration record: written on first evaluation, kept by a plain re-run, replaced by
    --calibrate, one entry per score normalisation."""
    from datasets.cohort import load_cohort
    from models.calibration import calibration_path, read_calibration
    from models.pipelines.scoring import as_norm, cohort_stats, cosine_pairs

    utts = scan_tree(tree, with_durations=True)
    rng = np.random.default_rng(5)
    cohort_wavs = [_tone(f0, 0.6, 16000, rng) for f0 in (240.0, 400.0, 650.0, 1000.0, 1200.0)]
    cohort = oracle.embed_batch(cohort_wavs, 16000)
    np.save(tmp_path / "cohort.npy", cohort)
    cohort = load_cohort(tmp_path / "cohort.npy", oracle.embed_dim)
    result = evaluate_tree(oracle, utts, cohort=cohort, asnorm_topk=3, report_dir=tmp_path)
    assert result["score_norm"] == {"method": "asnorm", "top_k": 3, "cohort_size": 5}
    assert result["asnorm"]["num_trials"] == result["num_trials"] == 66
    assert result["asnorm"]["eer"] == 0.0  # oracle voices stay separable after normalisation

    lines = (tmp_path / "scores.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["enroll", "test", "label", "score", "asnorm"]
    assert len(lines) == 67
    by_key = {u.key: u for u in utts}
    enroll, test, label, raw, norm = lines[1].split("\t")
    a = oracle.embed(*load_audio(by_key[enroll].path))[None]
    b = oracle.embed(*load_audio(by_key[test].path))[None]
    assert int(label) == (by_key[enroll].speaker == by_key[test].speaker)
    assert float(raw) == pytest.approx(cosine_pairs(a, b)[0], abs=1e-5)
    want = as_norm(cosine_pairs(a, b), cohort_stats(a, cohort, 3), cohort_stats(b, cohort, 3))
    assert float(norm) == pytest.approx(want[0], abs=1e-4)

    # the CLI: a first evaluation writes the record, a plain re-run keeps it, --calibrate replaces
    ckpt = _checkpoint(tmp_path)
    base = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--json"]
    assert main([*base, "--max-trials", "20", "--report", str(tmp_path / "rep")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["calibration"] == ["none"]
    for name in ("scores.tsv", "result.json", "det.png", "scores_hist.png"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert first["report"]["det"] == str(tmp_path / "rep" / "det.png")
    record = read_calibration(ckpt, SpeakerEmbedder.from_checkpoint(ckpt).model_id)
    assert record is not None and set(record.entries) == {"none"}
    entry = record.entry("none")
    assert entry.threshold("eer") == pytest.approx(first["eer_threshold"])
    assert entry.threshold("min_dcf_0.01") == pytest.approx(first["min_dcf_0.01_threshold"])
    assert entry.trials["num_trials"] == 20 and str(tree) in entry.data
    assert main(base) == 0  # all 66 pairs now: another operating point, but no --calibrate
    again = json.loads(capsys.readouterr().out)
    assert again["calibration"] == []
    assert read_calibration(ckpt).entry("none").trials["num_trials"] == 20
    np.save(
        tmp_path / "cohort_model.npy",
        SpeakerEmbedder.from_checkpoint(ckpt).embed_batch(cohort_wavs, 16000),
    )
    assert main([*base, "--calibrate", "--cohort", str(tmp_path / "cohort_model.npy")]) == 0
    cal = json.loads(capsys.readouterr().out)
    assert cal["calibration"] == ["none", "asnorm"]
    record = read_calibration(ckpt)
    assert record.entry("none").trials["num_trials"] == 66
    assert record.entry("asnorm").threshold("eer") == pytest.approx(cal["asnorm"]["eer_threshold"])
    assert record.entry("asnorm").score_norm.cohort == str(tmp_path / "cohort_model.npy")
    assert calibration_path(ckpt).name == "model.pt.calibration.json"
    # a cohort of another model's size is refused with a clear message
    np.save(tmp_path / "wrong.npy", np.ones((4, 7), np.float32))
    assert main([*base, "--cohort", str(tmp_path / "wrong.npy")]) == 2

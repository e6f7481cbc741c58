"""ray_jobs.pack.cli: sources, kinds, exit codes (Ray is not needed)."""

# ruff: noqa: E402  (imports follow the sys.modules['ray'] = None guard on purpose)

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.modules.setdefault("ray", None)  # the pack job must run without Ray

import numpy as np
import pytest

from datasets.audio import write_audio
from datasets.hdf5_shards import load_manifest, read_all
from datasets.manifests import scan_tree, write_manifest_csv
from ray_jobs.pack.cli import main
from tests.conftest import real_data_root

REPO = Path(__file__).resolve().parents[2]
REAL = real_data_root() or Path("/nonexistent/shared/data")
realdata = pytest.mark.realdata
needs_real = pytest.mark.skipif(
    real_data_root() is None,
    reason="real data not found: set VOXRAY_REAL_DATA or place shared/ beside the repo",
)


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for s in range(2):
        for u in range(3):
            write_audio(root / "ds" / f"s{s}" / f"u{u}.wav", rng.uniform(-0.3, 0.3, 1600), 16000)
    return root


def test_pack_tree(tmp_path, capsys):
    rc = main(["--data-root", str(_tree(tmp_path / "d")), "--output", str(tmp_path / "o"),
               "--utts-per-shard", "4", "--no-progress"])  # fmt: skip
    assert rc == 0
    m = load_manifest(tmp_path / "o")
    assert m["num_utterances"] == 6 and len(m["shards"]) == 2 and m["speakers"] == ["s0", "s1"]
    assert "packed 6 speech utterances" in capsys.readouterr().out


def test_pack_csv_and_kaldi(tmp_path):
    utts = scan_tree(_tree(tmp_path / "d"))
    write_manifest_csv(utts, tmp_path / "m.csv")
    assert (
        main(
            [
                "--manifest",
                str(tmp_path / "m.csv"),
                "--output",
                str(tmp_path / "o1"),
                "--no-progress",
            ]
        )
        == 0
    )
    (tmp_path / "wav.scp").write_text(
        "".join(f"{u.utterance}-{u.speaker} {u.path}\n" for u in utts)
    )
    (tmp_path / "utt2spk").write_text(
        "".join(f"{u.utterance}-{u.speaker} {u.speaker}\n" for u in utts)
    )
    rc = main(["--wav-scp", str(tmp_path / "wav.scp"), "--utt2spk", str(tmp_path / "utt2spk"),
               "--output", str(tmp_path / "o2"), "--sample-rate", "8000", "--no-progress"])  # fmt: skip
    assert rc == 0
    m = load_manifest(tmp_path / "o2")
    assert m["sample_rate"] == 8000 and m["num_utterances"] == 6
    assert all(len(r["audio"]) == 800 for r in read_all(tmp_path / "o2"))


def test_noise_kind_plain_folder(tmp_path):
    write_audio(tmp_path / "noise" / "hum.wav", np.full(1600, 0.1), 16000)
    write_audio(tmp_path / "noise" / "fan.wav", np.full(3200, 0.1), 16000)
    assert main(["--data-root", str(tmp_path / "noise"), "--kind", "noise",
                 "--output", str(tmp_path / "o"), "--no-progress"]) == 0  # fmt: skip
    assert load_manifest(tmp_path / "o")["speakers"] == ["fan", "hum"]


def test_bad_input_exit_codes(tmp_path, caplog):
    assert main(["--data-root", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "not a folder" in caplog.text
    (tmp_path / "d").mkdir()
    assert main(["--data-root", str(tmp_path / "d"), "--output", str(tmp_path / "o")]) == 2
    assert "no audio files" in caplog.text
    assert (
        main(
            [
                "--data-root",
                str(tmp_path / "d"),
                "--layout",
                "nope",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert main(["--wav-scp", str(tmp_path / "x"), "--output", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--output", str(tmp_path / "o")])  # no source
    assert exc.value.code == 2
    write_audio(tmp_path / "bad" / "ds" / "s" / "u.wav", np.zeros(10), 16000)
    (tmp_path / "bad" / "ds" / "s" / "u.wav").write_bytes(b"RIFFjunk")
    assert (
        main(
            ["--data-root", str(tmp_path / "bad"), "--output", str(tmp_path / "o"), "--no-progress"]
        )
        == 1
    )


def test_module_runs_without_ray(tmp_path):
    code = "import sys; sys.modules['ray'] = None; import runpy; sys.argv = ['pack', '--help']; runpy.run_module('ray_jobs.pack', run_name='__main__')"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert res.returncode == 0 and "--data-root" in res.stdout


@realdata
@needs_real
def test_real_cmu_arctic_pattern(tmp_path):
    rc = main(["--data-root", str(REAL / "speech" / "cmu-arctic"), "--layout", "cmu-arctic",
               "--output", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert rc == 0
    m = load_manifest(tmp_path / "o")
    assert m["speakers"] == ["aew", "axb"] and m["num_utterances"] == 6

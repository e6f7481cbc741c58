"""First-touch commands as a user runs them: subprocesses on real recordings, no Ray, no server.

``python -m ray_jobs.verify``, ``python -m ray_jobs.embed`` and ``python -m ray_jobs.diarize
FILE`` with a published model by name (``pip:resemblyzer``, offline). Each must decide, write
or print what its docstring says, and never import Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.rttm import parse_rttm
from models.calibration import calibration_from_metrics, write_calibration
from models.metrics import diarization_error_rate
from tests.conftest import REAL, REPO_ROOT, needs_real

pytestmark = [pytest.mark.realdata, needs_real]

ARCTIC = REAL / "speech" / "cmu-arctic"
AEW = [ARCTIC / f"cmu_arctic_us_aew_a000{i}.wav" for i in (1, 2)]
AXB = ARCTIC / "cmu_arctic_us_axb_a0004.wav"
SAMPLE = REAL / "diarization" / "pyannote-sample"
MODEL = "pip:resemblyzer"
# The command runs as `python -m` would run it (runpy), and reports at exit whether `ray` was
# imported: the first-touch commands must start without it (fast, no cluster).
_NO_RAY = "import sys, runpy; sys.argv = {argv!r}; "
_NO_RAY += (
    "import atexit; atexit.register(lambda: sys.stderr.write('RAY=%s' % ('ray' in sys.modules)))"
)
_NO_RAY += "; runpy.run_module({mod!r}, run_name='__main__')"


def run(module: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repo root; asserts it never imported ``ray``."""
    code = _NO_RAY.format(argv=[module, *args], mod=module)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=timeout, env=env)  # fmt: skip
    assert "RAY=False" in res.stderr, res.stderr[-2000:]
    return res


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """The resemblyzer checkpoint copied, with a calibration record at cosine 0.7."""
    from models.hub import resolve_checkpoint
    from models.pipelines.speaker import SpeakerEmbedder

    ckpt = tmp_path_factory.mktemp("cal") / "ge2e.pt"
    shutil.copy(resolve_checkpoint(MODEL), ckpt)
    metrics = {"eer": 0.05, "eer_threshold": 0.7, "num_trials": 10, "num_target": 5,
               "num_nontarget": 5, "trials_source": "file"}  # fmt: skip
    cal = calibration_from_metrics(metrics, data="test")
    write_calibration(ckpt, SpeakerEmbedder.from_checkpoint(ckpt).model_id, cal)
    return ckpt


def test_verify_and_embed_agree(tmp_path, calibrated, capsys):
    from ray_jobs.verify.cli import main  # in-process (a subprocess below covers start-up)

    assert main([*map(str, AEW), "--checkpoint", MODEL, "--json"]) == 0
    r_same = json.loads(capsys.readouterr().out)
    assert r_same["threshold_source"] == "default" and r_same["threshold"] == 0.5

    # another speaker: below the calibrated threshold (0.7), which the record supplies
    diff = run("ray_jobs.verify", str(AEW[0]), str(AXB), "--checkpoint", str(calibrated))
    assert diff.returncode == 0, diff.stderr[-2000:]
    line = diff.stdout.strip()
    assert "different speakers" in line and "threshold 0.7000, calibration:" in line
    score_diff = float(line.split()[1])
    assert r_same["same"] and r_same["score"] > score_diff + 0.1

    out = tmp_path / "emb" / "ab.npy"
    emb = run("ray_jobs.embed", *map(str, AEW), "-o", str(out), "--checkpoint", MODEL)
    assert emb.returncode == 0, emb.stderr[-2000:]
    assert json.loads(emb.stdout)["shape"] == [2, 256]
    e = np.load(out)
    assert e.dtype == np.float32 and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert float(e[0] @ e[1]) == pytest.approx(r_same["score"], abs=1e-4)  # one scoring rule


def test_verify_bad_input_is_a_user_error(tmp_path, caplog):
    from ray_jobs.verify.cli import main

    missing = tmp_path / "missing.wav"
    assert main([str(AEW[0]), str(missing), "--checkpoint", MODEL]) == 2
    assert "missing.wav" in caplog.text
    assert main([str(AEW[0]), str(AXB), "--checkpoint", str(tmp_path / "none.pt")]) == 2


def test_diarize_local_prints_rttm_and_draws_timeline(tmp_path):
    res = run("ray_jobs.diarize", str(SAMPLE / "sample.wav"), "--checkpoint", MODEL,
              "--output", str(tmp_path), "--reference-rttm", str(SAMPLE / "sample.rttm"))  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    hyp = parse_rttm(res.stdout)["sample"]  # stdout is exactly the RTTM
    ref = parse_rttm((SAMPLE / "sample.rttm").read_text())["sample"]
    assert len({t[2] for t in hyp}) == 2
    der = diarization_error_rate(ref, hyp, collar=0.25).der
    assert der < 0.2
    assert json.loads((tmp_path / "der.json").read_text())["total"]["der"] == pytest.approx(der)
    from PIL import Image

    img = Image.open(tmp_path / "plots" / "sample.png")
    assert img.width >= 800 and img.height >= 200  # 4 rows: 2 reference + 2 hypothesis
    assert (tmp_path / "rttm" / "sample.rttm").read_text() == res.stdout

"""Codec evaluation: metrics per file, the Opus skip, the report, the evaluate.py dispatch."""

import sys

sys.modules.setdefault("ray", None)

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from models import build_model, save_checkpoint  # noqa: E402
from models.pipelines.codec import CodecPipeline  # noqa: E402
from ray_jobs.evaluate import codec as ec  # noqa: E402
from ray_jobs.evaluate.cli import main as evaluate_main  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from datasets.synth import sample_voice, synthesize_utterance

    root = tmp_path_factory.mktemp("eval_codec")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tinystream-ultra_tiny").eval(), root / "c.pt")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        sf.write(
            audio / f"u{i}.wav", synthesize_utterance(sample_voice(rng), 1.0, 16000, rng), 16000
        )
    return ckpt, audio


def test_evaluate_files(setup):
    ckpt, audio = setup
    pipe = CodecPipeline.from_checkpoint(ckpt)
    files = ec.audio_files(audio) + [str(audio / "missing.wav")]
    res = ec.evaluate_files(pipe, files, num_quantizers=1)
    assert res["num_files"] == 2 and len(res["failed"]) == 1
    assert res["bitrate_kbps"] == pytest.approx(pipe.bitrate(1) / 1e3)
    for key in ("si_sdr", "mel_distance", "stoi"):
        assert np.isfinite(res[key])
    assert res["mel_distance"] > 0
    # a perfect "codec" scores perfectly: the metric wiring compares the right signals
    wav, _ = sf.read(files[0], dtype="float32")
    perfect = ec.quality(wav, wav, 16000)
    assert perfect["si_sdr"] > 50 and perfect["stoi"] > 0.99 and perfect["mel_distance"] < 1e-4


def test_opus_skipped_cleanly(setup, monkeypatch, tmp_path, capsys):
    ckpt, audio = setup
    monkeypatch.setattr(ec.shutil, "which", lambda name: None)
    rc = evaluate_main(["--checkpoint", str(ckpt), "--data-root", str(audio), "--opus", "--json",
                  "--num-quantizers", "1", "2", "--report", str(tmp_path / "rep")])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["opus"] is None
    assert [r["num_quantizers"] for r in out["runs"]] == [1, 2]
    assert out["runs"][1]["bitrate_kbps"] == pytest.approx(2 * out["runs"][0]["bitrate_kbps"])
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "| ours |" in report and "spectrograms/00_u0.png" in report
    from PIL import Image

    img = Image.open(tmp_path / "rep" / "spectrograms" / "00_u0.png")
    assert img.height > 300  # original + ours panels, with axes
    # the listening page: original and ours per clip, players pointing at the WAVs beside it
    page = (tmp_path / "rep" / "index.html").read_text()
    assert page.count("<section") == 2 and "<table>" in page
    for clip in ("00_u0", "01_u1"):
        for sig in ("original", "ours_"):
            (wav,) = (tmp_path / "rep" / "audio").glob(f"{clip}__{sig}*.wav")
            assert f'src="audio/{wav.name}"' in page
            assert sf.info(wav).samplerate == 16000
    assert "Opus" not in page  # no tools here: no baseline column, and no empty player


def test_opus_below_minimum_uses_6kbps(monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        raise RuntimeError("stop")

    monkeypatch.setattr(ec.subprocess, "run", fake_run)
    tool = ec.OpusTool("opus-tools", "opusenc", "opusdec")
    with pytest.raises(RuntimeError):
        ec.opus_roundtrip(np.zeros(1600, np.float32), 16000, 1.6, tool)
    assert seen["cmd"][seen["cmd"].index("--bitrate") + 1] == "6"


def test_dispatch_from_evaluate(setup, capsys):
    from ray_jobs.evaluate.cli import main

    ckpt, audio = setup
    assert main(["--checkpoint", str(ckpt), "--data-root", str(audio), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"][0]["num_files"] == 2
    assert main(["--checkpoint", str(ckpt), "--data-root", str(audio / "nothing")]) == 2

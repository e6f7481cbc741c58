"""Batch diarization job: Ray-free core (inputs, scoring) and the Ray Data job end to end."""

import json

import numpy as np
import pytest
import torch

import models
from datasets.rttm import read_rttm
from models.config import ConfigError
from models.metrics import diarization_error_rate
from models.pipelines.diarize import diarization_config
from ray_jobs.diarize.core import (
    DiarizeJobError,
    der_report,
    list_inputs,
)
from tests.conversations import write_dev_set


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two conversations, one corrupt file, reference RTTMs and a tiny untrained checkpoint."""
    root = tmp_path_factory.mktemp("diar")
    audio, refs = root / "audio", root / "ref"
    truths = write_dev_set(audio, refs, {"conv0": 0, "conv1": 1})
    (audio / "broken.wav").write_bytes(b"RIFF not really a wave file")
    torch.manual_seed(0)
    ckpt = models.save_checkpoint(models.build_model("ecapa_tdnn-tiny").eval(), root / "model.pt")
    return {"root": root, "audio": audio, "refs": refs, "ckpt": ckpt, "truths": truths}


# ---------------------------------------------------------------------------------------------
# Ray-free core


def test_list_inputs_folder_file_list_and_clash(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in (tmp_path / "a" / "x y.wav", tmp_path / "b" / "z.flac"):
        p.write_bytes(b"")
    rows = list_inputs(tmp_path)
    assert [r["uri"] for r in rows] == ["x_y", "z"]  # whitespace cannot be in an RTTM uri
    lst = tmp_path / "list.txt"
    lst.write_text("# comment\nb/z.flac\n\n")
    assert [r["uri"] for r in list_inputs(lst)] == ["z"]
    assert list_inputs(tmp_path / "b" / "z.flac")[0]["path"].endswith("z.flac")
    (tmp_path / "b" / "x y.wav").write_bytes(b"")
    with pytest.raises(DiarizeJobError, match="share a uri"):
        list_inputs(tmp_path)
    with pytest.raises(DiarizeJobError, match="no such"):
        list_inputs(tmp_path / "missing")


def test_config_overrides_are_strict():
    cfg = diarization_config(["clustering.threshold=0.7", "window_seconds=2.0"])
    assert cfg.clustering.threshold == 0.7 and cfg.window_seconds == 2.0
    with pytest.raises(ConfigError, match="unknown"):
        diarization_config(["clustering.thresold=0.7"])


def test_der_total_from_summed_seconds():
    refs = {"a": [(0.0, 10.0, "x")], "b": [(0.0, 1.0, "y")], "c": [(0.0, 1.0, "z")]}
    hyps = {"a": [(0.0, 9.0, "A")], "b": [], "d": [(0.0, 1.0, "Q")]}
    rep = der_report(hyps, refs, collar=0.0)
    per = {f["uri"]: f for f in rep["files"]}
    assert per["a"]["der"] == pytest.approx(0.1) and per["b"]["der"] == pytest.approx(1.0)
    # summed seconds: (1 + 1) / 11, not the mean of ratios (0.55)
    assert rep["total"]["der"] == pytest.approx(2.0 / 11.0)
    assert rep["missing"] == ["c"] and rep["unscored"] == ["d"]


# ---------------------------------------------------------------------------------------------
# Ray Data job


@pytest.mark.ray
def test_job_writes_rttm_failures_and_der(ray_cluster, corpus, tmp_path):
    from ray_jobs.diarize.cli import main

    out = tmp_path / "out"
    rc = main(
        ["--input", str(corpus["audio"]), "--output", str(out), "--checkpoint",
         str(corpus["ckpt"]), "--reference-rttm", str(corpus["refs"]), "--collar", "0.25"]
    )  # fmt: skip
    assert rc == 1  # one corrupt file: outputs written, exit code says something failed
    failures = json.loads((out / "failures.json").read_text())
    assert [f["uri"] for f in failures] == ["broken"] and failures[0]["error"]
    report = json.loads((out / "der.json").read_text())
    assert sorted(f["uri"] for f in report["files"]) == ["conv0", "conv1"]
    assert report["missing"] == []
    sums = np.zeros(4)
    for f in report["files"]:
        uri = f["uri"]
        hyp = read_rttm(out / "rttm" / f"{uri}.rttm").get(uri, [])
        seg = json.loads((out / "segments" / f"{uri}.json").read_text())
        assert len(seg["segments"]) == len(hyp) > 0
        assert seg["duration"] > corpus["truths"][uri][-1][1]
        expect = diarization_error_rate(corpus["truths"][uri], hyp, collar=0.25)
        assert f["der"] == pytest.approx(expect.der, abs=1e-3)
        assert f["confusion"] == pytest.approx(expect.confusion, abs=1e-3)
        sums += [f["total_seconds"], f["missed_seconds"], f["false_alarm_seconds"],
                 f["confusion_seconds"]]  # fmt: skip
    assert report["total"]["der"] == pytest.approx(sums[1:].sum() / sums[0])
    md = (out / "der.md").read_text()
    assert "**total**" in md and "conv0" in md


@pytest.mark.ray
def test_job_forced_speakers_and_exit_codes(ray_cluster, corpus, tmp_path):
    from ray_jobs.diarize.cli import main

    lst = tmp_path / "list.txt"
    lst.write_text(f"{corpus['audio'] / 'conv0.wav'}\n{corpus['audio'] / 'conv1.wav'}\n")
    out = tmp_path / "out"
    base = ["--input", str(lst), "--output", str(out)]
    assert main([*base, "--checkpoint", str(corpus["ckpt"]), "--num-speakers", "2"]) == 0
    for uri in ("conv0", "conv1"):
        seg = json.loads((out / "segments" / f"{uri}.json").read_text())
        assert seg["num_speakers"] == 2
    assert json.loads((out / "failures.json").read_text()) == []
    assert main(base) == 2  # no checkpoint
    assert main([*base, "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert main([*base, "--checkpoint", str(corpus["ckpt"]), "--set", "bogus=1"]) == 2
    assert main([*base, "--checkpoint", str(corpus["ckpt"]), "--min-speakers", "3",
                 "--max-speakers", "2"]) == 2  # fmt: skip

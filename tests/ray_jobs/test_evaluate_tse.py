"""TSE evaluation: metric keys and values on known signals, and the CLI through ray_jobs.evaluate."""

import sys

sys.modules.setdefault("ray", None)

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from datasets.mixing import MixSample  # noqa: E402
from models import build_model  # noqa: E402
from models.checkpoint import save_checkpoint  # noqa: E402
from ray_jobs.evaluate.tse import evaluate_samples  # noqa: E402

SR = 48000


class _Oracle:
    """Stands in for TargetExtractor: returns a fixed signal per call (in order)."""

    sample_rate = SR

    def __init__(self, outputs):
        self.outputs = list(outputs)

    def __call__(self, mix, mix_sr, ref, ref_sr):
        assert mix_sr == ref_sr == SR
        return self.outputs.pop(0)


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))  # syllable-rate envelope so PESQ finds speech
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 440, 880, 1320))
    return (0.05 * env * tone).astype(np.float32)


def test_evaluate_samples_scores_present_and_absent():
    target = _speechlike(2.0, 0)
    other = _speechlike(2.0, 1)[::-1].copy()
    mix = target + other
    ref = _speechlike(1.0, 2)
    samples = [
        MixSample(mix=mix, target=target, ref=ref, present=True, info={}),
        MixSample(mix=mix, target=np.zeros_like(mix), ref=ref, present=False, info={}),
    ]
    # a perfect extraction of the present target; the absent mixture scaled down 10x (20 dB)
    r = evaluate_samples(_Oracle([target.copy(), 0.1 * mix]), samples, per_sample=True)
    assert (r["num_mixes"], r["num_present"], r["num_absent"]) == (2, 1, 1)
    assert r["si_sdr"] > 60 and r["si_sdri"] > 50 and r["mix_si_sdr"] < 5
    assert r["pesq"] > 4.0 and r["pesq"] > r["mix_pesq"]
    assert r["stoi"] > 0.99 and r["stoi"] > r["mix_stoi"]
    assert r["absent_suppression_db"] == pytest.approx(20.0, abs=1e-3)
    assert len(r["samples"]) == 2 and r["samples"][1]["present"] is False
    assert r["real_time_factor"] >= 0


def test_no_present_mixes_gives_none_means():
    mix = _speechlike(1.0, 3)
    s = MixSample(mix=mix, target=np.zeros_like(mix), ref=mix, present=False, info={})
    r = evaluate_samples(_Oracle([mix]), [s])
    assert r["si_sdr"] is None and r["pesq"] is None
    assert r["absent_suppression_db"] == pytest.approx(0.0, abs=1e-6)
    json.dumps(r)  # None, not NaN: valid JSON


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from datasets.synth import generate_corpus

    root = tmp_path_factory.mktemp("tse_eval")
    generate_corpus(root / "speech", num_speakers=4, utts_per_speaker=2, seconds=(1.5, 2.0), seed=1)
    torch.manual_seed(0)
    return root, save_checkpoint(build_model("tse-tiny"), root / "tse.pt")


def test_cli_through_the_evaluation_entry_point(corpus, capsys):
    from ray_jobs.evaluate.cli import main

    root, ckpt = corpus
    torch.set_num_threads(1)
    args = ["--checkpoint", str(ckpt), "--data-root", str(root / "speech"), "--json"]
    args += ["--num-mixes", "3", "--segment-seconds", "1.0", "--max-interferers", "2"]
    args += ["--report", str(root / "page"), "--report-mixes", "2"]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["num_mixes"] == 3 and r["num_present"] + r["num_absent"] == 3
    assert r["sample_rate"] == SR and r["checkpoint"] == str(ckpt)
    assert "samples" not in r and "estimates" not in r  # kept for the page only
    # the listening page: two mixtures, each with players for its signals and a spectrogram
    import soundfile as sf

    page = root / "page" / "index.html"
    assert r["listening_page"] == str(page)
    text = page.read_text()
    assert text.count("<section") == 2 and text.count('src="spectrograms/') == 2
    wavs = sorted((root / "page" / "audio").glob("*.wav"))
    assert text.count("<audio") == len(wavs) >= 2 * 3  # mixture, extracted, enrollment (+target)
    for w in wavs:
        assert f'src="audio/{w.name}"' in text and sf.info(w).samplerate == SR


@pytest.mark.parametrize(
    "over, message",
    [
        (["--data-root", "/nonexistent/speech"], "does not exist"),
        (["--num-mixes", "0"], "--num-mixes"),
        (["--max-interferers", "9"], "speaker"),
    ],
)
def test_cli_bad_input_exits_2(corpus, caplog, over, message):
    from ray_jobs.evaluate.cli import main

    root, ckpt = corpus
    args = ["--checkpoint", str(ckpt), "--data-root", str(root / "speech"), "--num-mixes", "1"]
    with caplog.at_level("ERROR"):
        assert main(args + over) == 2
    assert message in caplog.text

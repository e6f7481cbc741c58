"""``python -m ray_jobs.extract_target``: output length and rate, chunking, exit-2 errors.

A tiny random-weight ``tse-tiny`` checkpoint: audio quality is meaningless, the contract is the
file the CLI writes (48 kHz, the resampled mixture's length) and its error handling.
"""

import sys

sys.modules.setdefault("ray", None)

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from models import build_model  # noqa: E402
from models.checkpoint import save_checkpoint  # noqa: E402
from ray_jobs.extract_target.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tse_cli")
    rng = np.random.default_rng(0)
    sf.write(root / "mix.wav", 0.1 * rng.standard_normal(int(2.3 * 16000)), 16000)
    sf.write(root / "ref.wav", 0.1 * rng.standard_normal(16000), 16000)
    sf.write(root / "short.wav", 0.1 * rng.standard_normal(3200), 16000)  # 0.2 s
    (root / "junk.wav").write_bytes(b"not audio at all" * 10)
    return {"ckpt": save_checkpoint(build_model("tse-tiny"), root / "tse.pt"), "root": root}


def _args(files, out, **over):
    a = {
        "--checkpoint": files["ckpt"],
        "--mix": files["root"] / "mix.wav",
        "--ref": files["root"] / "ref.wav",
        "-o": out,
        "--chunk-seconds": 1.0,
        "--overlap-seconds": 0.25,
    }
    a.update(over)
    return [str(x) for kv in a.items() for x in kv]


def test_writes_48k_output_of_mixture_length(files, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert main(_args(files, out)) == 0
    data, sr = sf.read(out)
    assert sr == 48000
    assert data.shape == (math.ceil(2.3 * 16000 * 3),)  # polyphase 16 -> 48 kHz: ceil(T * 3)
    assert np.all(np.isfinite(data)) and np.any(data != 0)
    rtf = capsys.readouterr().out.strip().splitlines()[-1]
    assert rtf.startswith("real-time factor: ") and float(rtf.split()[2]) > 0


def test_chunked_matches_single_pass_where_one_chunk_covers(files, tmp_path):
    # a chunk longer than the mixture is one forward pass: same as the pipeline called directly
    from datasets.audio import load_audio
    from models.pipelines.tse import TargetExtractor

    out = tmp_path / "one.wav"
    assert main(_args(files, out, **{"--chunk-seconds": 10.0, "--overlap-seconds": 0.0})) == 0
    mix, sr = load_audio(files["root"] / "mix.wav")
    ref, _ = load_audio(files["root"] / "ref.wav")
    direct = TargetExtractor.from_checkpoint(files["ckpt"])(mix, sr, ref, sr, chunk_seconds=10.0)
    got, _ = sf.read(out, dtype="float32")
    np.testing.assert_allclose(got, np.clip(direct, -1, 1), atol=2 / 32768)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"--checkpoint": "missing.pt"}, "does not exist"),
        ({"--ref": "short.wav"}, "at least"),
        ({"--mix": "junk.wav"}, "--mix: "),
        ({"--mix": "nothere.wav"}, "--mix: "),
        ({"--ref": "junk.wav"}, "--ref: "),
        ({"--overlap-seconds": 0.9}, "overlap_seconds"),
    ],
)
def test_bad_input_exits_2_with_message(files, tmp_path, caplog, over, message):
    over = {k: (files["root"] / v if k in ("--ref", "--mix") else v) for k, v in over.items()}
    out = tmp_path / "bad.wav"
    with caplog.at_level("ERROR"):
        assert main(_args(files, out, **over)) == 2
    assert message in caplog.text
    assert not out.exists()

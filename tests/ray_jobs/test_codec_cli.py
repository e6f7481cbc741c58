"""``python -m ray_jobs.codec``: encode/decode files and folders, and its error exits."""

import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from models import build_model, save_checkpoint  # noqa: E402
from models.pipelines.codec import EncodedAudio  # noqa: E402
from ray_jobs.codec.cli import main  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec_cli")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("tinystream-ultra_tiny").eval(), root / "a.pt")
    other = save_checkpoint(build_model("tinystream-ultra_tiny").eval(), root / "b.pt")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i, sec in enumerate((0.5, 0.73)):
        sf.write(audio / f"x{i}.wav", 0.1 * rng.standard_normal(int(16000 * sec)), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF not audio")
    return root, ckpt, other, audio


def test_encode_decode_single_file(setup, tmp_path):
    root, ckpt, _, audio = setup
    code = tmp_path / "x.vxrc"
    assert main(["encode", "--checkpoint", str(ckpt), str(audio / "x1.wav"), "-o", str(code)]) == 0
    enc = EncodedAudio.from_bytes(code.read_bytes())
    assert enc.num_samples == int(16000 * 0.73)
    assert enc.num_quantizers == 2
    assert main(["encode", "--checkpoint", str(ckpt), str(audio / "x1.wav"), "-o", str(code),
                 "--num-quantizers", "1"]) == 0  # fmt: skip
    assert EncodedAudio.from_bytes(code.read_bytes()).num_quantizers == 1
    out = tmp_path / "y.wav"
    assert main(["decode", "--checkpoint", str(ckpt), str(code), "-o", str(out)]) == 0
    y, sr = sf.read(out)
    assert sr == 16000 and y.shape == (int(16000 * 0.73),)


def test_folder_batch_continues_after_failure(setup, tmp_path):
    _, ckpt, _, audio = setup
    out = tmp_path / "codes"
    rc = main(["encode", "--checkpoint", str(ckpt), str(audio), "-o", str(out)])
    assert rc == 2  # broken.wav failed ...
    assert sorted(p.name for p in out.iterdir()) == ["x0.vxrc", "x1.vxrc"]  # ... the rest did not
    wavs = tmp_path / "wavs"
    assert main(["decode", "--checkpoint", str(ckpt), str(out), "-o", str(wavs)]) == 0
    assert sorted(p.name for p in wavs.iterdir()) == ["x0.wav", "x1.wav"]


def test_errors_exit_2(setup, tmp_path, caplog):
    _, ckpt, other, audio = setup
    code = tmp_path / "x.vxrc"
    assert main(["encode", "--checkpoint", str(ckpt), str(audio / "x0.wav"), "-o", str(code)]) == 0
    # codes of another checkpoint (another model id)
    assert (
        main(["decode", "--checkpoint", str(other), str(code), "-o", str(tmp_path / "o.wav")]) == 2
    )
    assert "same checkpoint" in caplog.text
    bad = tmp_path / "bad.vxrc"
    bad.write_bytes(code.read_bytes()[:-3])
    assert main(["decode", "--checkpoint", str(ckpt), str(bad), "-o", str(tmp_path / "o.wav")]) == 2
    assert "truncated" in caplog.text
    missing = tmp_path / "nope.pt"
    assert (
        main(["encode", "--checkpoint", str(missing), str(audio / "x0.wav"), "-o", str(code)]) == 2
    )
    assert main(["encode", "--checkpoint", str(ckpt), str(audio / "x0.wav"), "-o", str(code),
                 "--num-quantizers", "9"]) == 2  # fmt: skip

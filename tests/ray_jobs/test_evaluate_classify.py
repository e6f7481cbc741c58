"""Classifier evaluation: accuracy, per-class accuracy and confusion on an ESC-50-format folder."""

import sys

sys.modules.setdefault("ray", None)

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from models import build_model, save_checkpoint  # noqa: E402
from ray_jobs.evaluate.cli import main  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("esc")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = ["filename,fold,target,category"]
    for i in range(6):
        name = f"{1 + i % 2}-{i}-A-{i % 3}.wav"
        sf.write(root / "audio" / name, 0.2 * rng.standard_normal(8000), 20000)
        rows.append(f"{name},{1 + i % 2},{i % 3},c{i % 3}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    torch.manual_seed(0)
    model = build_model("acdnet-tiny").eval()
    classes = [f"c{i}" for i in range(10)]
    ckpt = save_checkpoint(model, root / "clf.pt", meta={"classes": classes, "val_fold": 2})
    return root, ckpt


def test_fold_from_meta_and_confusion(setup, capsys):
    root, ckpt = setup
    assert main(["--checkpoint", str(ckpt), "--data-root", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fold"] == 2 and out["num_clips"] == 3
    conf = np.array(out["confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 3
    assert conf.sum(1)[:3].tolist() == [1, 1, 1]  # rows = truth: one clip each of c0..c2
    assert out["accuracy"] == pytest.approx(np.trace(conf) / 3)
    assert out["per_class"]["c0"]["count"] == 1 and out["per_class"]["c5"]["accuracy"] is None

    from PIL import Image

    rep = root / "rep"
    assert main(["--checkpoint", str(ckpt), "--data-root", str(root), "--report", str(rep)]) == 0
    assert json.loads((rep / "result.json").read_text())["confusion"] == out["confusion"]
    img = np.asarray(Image.open(rep / "confusion.png").convert("L"))
    assert img.shape[0] > 200 and img.std() > 10  # drawn, not blank


def test_explicit_fold_and_errors(setup, capsys):
    root, ckpt = setup
    assert main(["--checkpoint", str(ckpt), "--data-root", str(root), "--fold", "1"]) == 0
    assert "over 3 clips" in capsys.readouterr().out
    assert main(["--checkpoint", str(ckpt), "--data-root", str(root), "--fold", "7"]) == 2
    assert main(["--checkpoint", str(ckpt), "--data-root", str(root / "nope")]) == 2


@pytest.mark.realdata
def test_real_esc50_subset(real_data, tmp_path, capsys):
    esc = real_data / "sound-events" / "esc50"
    if not esc.is_dir():
        pytest.skip("no ESC-50 folder in the shared data")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("micro-acdnet").eval(), tmp_path / "m.pt")
    argv = ["--checkpoint", str(ckpt), "--data-root", str(esc), "--max-clips", "4", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_clips"] == 4 and np.array(out["confusion"]).shape == (50, 50)

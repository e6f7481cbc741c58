"""The pictures (ray_jobs/plots.py): what each draws is checked on the figure's data where it
matters (DET points on probit axes, spectrogram peak), and every PNG is a drawn image."""

import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import norm  # noqa: E402

from models.metrics import verification_metrics  # noqa: E402
from ray_jobs import plots  # noqa: E402


def _drawn(path) -> np.ndarray:
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert img.std() > 10, f"{path} looks blank"
    return img


def test_det_marks_eer_on_the_diagonal(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1.0, 1.0, 500), rng.normal(-1.0, 1.0, 500)])
    labels = np.arange(1000) < 500
    saved = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: saved.setdefault("fig", fig))
    plots.det_png(scores, labels, tmp_path / "det.png")
    ax = saved["fig"].axes[0]
    lines = {ln.get_label().split()[0]: ln for ln in ax.lines}
    eer = verification_metrics(scores, labels)["eer"]
    x, y = lines["EER"].get_data()
    assert x[0] == pytest.approx(norm.ppf(eer)) and y[0] == pytest.approx(norm.ppf(eer))
    assert eer == pytest.approx(norm.cdf(-1.0), abs=0.03)  # two unit normals 2 apart
    det_x, det_y = lines["DET"].get_data()
    assert np.all(np.diff(det_x) <= 1e-12) and np.all(np.diff(det_y) >= -1e-12)  # monotone
    assert "false-alarm probability (%)" in ax.get_xlabel()


def test_every_picture_is_drawn(tmp_path):
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=200), rng.random(200) < 0.3
    _drawn(plots.det_png(scores, labels, tmp_path / "det.png"))
    _drawn(plots.score_histogram_png(scores, labels, tmp_path / "h.png", thresholds={"t": 0.1}))
    tl = plots.timeline_png([(0.0, 1.0, "A"), (1.0, 2.5, "B")], tmp_path / "t.png",
                            reference=[(0.0, 1.2, "x"), (1.2, 2.5, "y")])  # fmt: skip
    one = plots.timeline_png([(0.0, 1.0, "A")], tmp_path / "t1.png")
    assert _drawn(tl).shape[0] > _drawn(one).shape[0]  # 4 rows are taller than 1
    conf = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    _drawn(plots.confusion_png(conf, ["a", "b", "c"], tmp_path / "c.png"))
    with pytest.raises(ValueError, match="square"):
        plots.confusion_png(conf[:2], ["a", "b", "c"], tmp_path / "bad.png")
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_spectrogram_axes_and_peak(tmp_path):
    sr = 16000
    tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)
    db, t, f = plots.spectrogram_db(tone, sr)
    assert f[int(db.mean(1).argmax())] == pytest.approx(1000, abs=sr / 512)
    assert t[-1] == pytest.approx(1.0, abs=0.05) and f[-1] == pytest.approx(sr / 2, abs=40)
    img = _drawn(plots.spectrogram_png({"a": tone, "b": 0.1 * tone}, sr, tmp_path / "s.png"))
    assert img.shape[0] > 300
    with pytest.raises(ValueError):
        plots.spectrogram_png({}, sr, tmp_path / "none.png")

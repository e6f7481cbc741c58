"""3D-Speaker's CSV manifests (datasets/manifests_3dspeaker.py), in the exact shape its recipes'
prepare_data_csv.py writes, read through the one dispatcher (scan_source) and checked against
speakerlab's own loader."""

import sys

sys.modules.setdefault("ray", None)

import pytest  # noqa: E402

from datasets.manifests import ManifestError, scan_source  # noqa: E402
from tests.conftest import REAL, needs_real  # noqa: E402

ARCTIC = REAL / "speech" / "cmu-arctic"


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("ID,dur,path,start,stop,spk\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


@pytest.mark.realdata
@needs_real
def test_chunked_and_whole_file_rows(tmp_path):
    from speakerlab.utils.fileio import load_data_csv

    a1, a2 = ARCTIC / "cmu_arctic_us_aew_a0001.wav", ARCTIC / "cmu_arctic_us_aew_a0002.wav"
    b4 = ARCTIC / "cmu_arctic_us_axb_a0004.wav"
    rows = [  # default seg_dur=3 chunks of a1 (3.88 s: one chunk) and a2; random_seg row of b4
        ["aew-a0001_arctic_dev_0.0_3.0", "3.88", str(a1), "0.0", "3.0", "aew_arctic_dev"],
        ["aew-a0002_arctic_dev_0.0_3.0", "6.2", str(a2), "0.0", "3.0", "aew_arctic_dev"],
        ["aew-a0002_arctic_dev_3.0_6.0", "6.2", str(a2), "3.0", "6.0", "aew_arctic_dev"],
        ["axb-a0004_arctic_dev", "2.805", str(b4), "0", "2.805", "axb_arctic_dev"],
    ]
    csv = _write(tmp_path / "data" / "arctic_dev" / "train.csv", rows)
    utts = scan_source(csv)
    assert [u.key for u in utts] == [
        "arctic_dev_aew_aew-a0001", "arctic_dev_aew_aew-a0002", "arctic_dev_axb_axb-a0004"
    ]  # fmt: skip
    assert {u.speaker for u in utts} == {"aew", "axb"} and utts[1].duration == 6.2
    # the same file as speakerlab reads it: every row's path and speaker is one of ours
    ours = {u.path: u for u in utts}
    for row in load_data_csv(csv).values():
        assert ours[row["path"]].speaker + "_arctic_dev" == row["spk"]


def test_relative_paths_and_errors(tmp_path):
    csv = _write(tmp_path / "train.csv", [["u1", "1.0", "wav/u1.wav", "0", "1.0", "s1"]])
    (u,) = scan_source(csv)
    assert u.path == str(tmp_path / "wav" / "u1.wav") and u.speaker == "s1"
    bad = _write(tmp_path / "b" / "train.csv", [["u1", "1", "x.wav", "0", "1", "s1"],
                                                ["u2", "1", "x.wav", "0", "1", "s2"]])  # fmt: skip
    with pytest.raises(ManifestError, match="speaker 's2' here"):
        scan_source(bad)
    (tmp_path / "odd.csv").write_text("ID,path\nu1,x.wav\n")  # neither ours nor 3D-Speaker's
    with pytest.raises(ManifestError, match="bad CSV header"):
        scan_source(tmp_path / "odd.csv")

"""serve.bench: the identification split on real speakers, and /identify over real HTTP with the
pretrained GE2E model (the benchmark behind BENCHMARKS.md "Speaker identification")."""

import numpy as np
import pytest

from tests.conftest import REAL

pytest.importorskip("resemblyzer")

LIBRI = REAL / "speech" / "librispeech-train-clean-100"


def _speakers(pairs):
    return {s for s, _ in pairs}


@pytest.mark.realdata
def test_split_is_disjoint_and_holds_out_queries(real_data):
    from serve.bench import identification_split

    s = identification_split(LIBRI, num_enrolled=6, num_impostors=5, seed=3)
    enrolled = set(s["enroll"])
    assert len(enrolled) == 6 and all(len(c) == 2 for c in s["enroll"].values())
    assert _speakers(s["queries"]) <= enrolled and len(s["queries"]) >= 6
    assert len(s["impostors"]) == 5 and not _speakers(s["impostors"]) & enrolled
    assert not set(s["unused"]) & (enrolled | _speakers(s["impostors"]))
    for spk, wav in s["queries"]:  # a query is never one of its speaker's enrollment clips
        assert wav.shape == (48000,) and wav.dtype == np.float32
        assert not any(np.array_equal(wav, e) for e in s["enroll"][spk])
    pool = sorted(s["enroll"])[:4] + [spk for spk, _ in s["impostors"]][:3]
    r = identification_split(LIBRI, num_enrolled=3, num_impostors=2, speakers=pool)
    assert set(r["enroll"]) | _speakers(r["impostors"]) | set(r["unused"]) <= set(pool)
    with pytest.raises(ValueError, match="wanted for enrollment"):
        identification_split(LIBRI, num_enrolled=3, num_impostors=0, speakers=pool[:2])


@pytest.mark.ray
@pytest.mark.realdata
def test_identify_over_http_with_the_pretrained_model(ray_cluster, real_data, tmp_path):
    from serve.bench import benchmark_identification, identification_split

    split = identification_split(LIBRI, num_enrolled=4, num_impostors=3, queries_per_speaker=1)
    r = benchmark_identification(
        "pip:resemblyzer",
        split,
        app_args={"threshold": 0.75},
        operating_points={"same": 0.75, "strict": 2.0},
    )
    assert r["health"]["threshold_source"] == "config" and r["health"]["num_speakers"] == 0
    assert r["config"] == {
        "speakers_available": r["config"]["speakers_available"],
        "enrolled": 4,
        "enroll_clips": 2,
        "queries": 4,
        "impostors": 3,
    }
    # GE2E tells 4 LibriSpeech speakers apart (EER ~3% on 3-s segments): all 4 right
    assert r["top1"] == 1.0 and r["counts"]["top1"] == 4
    assert r["identified"] + r["false_reject"] <= 1.0
    assert 0.0 <= r["false_accept"] <= 1.0
    # rates recomputed from the returned best scores match the service's own decisions
    same = r["at_points"]["same"]
    assert (same["identified"], same["false_reject"], same["false_accept"]) == (
        r["identified"],
        r["false_reject"],
        r["false_accept"],
    )
    strict = r["at_points"]["strict"]  # cosine never reaches 2: everyone is "unknown"
    assert strict["false_reject"] == 1.0 and strict["false_accept"] == 0.0

import sys
import warnings

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.metrics import diarization_error_rate  # noqa: E402

REF = [(0.0, 10.0, "A"), (10.0, 20.0, "B")]


def test_perfect_and_permutation_are_zero():
    assert diarization_error_rate(REF, REF).der == 0.0
    perm = [(0.0, 10.0, "x"), (10.0, 20.0, "y")]
    r = diarization_error_rate(REF, perm)
    assert r.der == 0.0 and r.total == 20.0
    assert r.mapping == {"x": "A", "y": "B"}


def test_all_missed_is_one():
    r = diarization_error_rate(REF, [])
    assert r.der == 1.0 and r.missed == 1.0 and r.missed_seconds == 20.0


def test_half_confusion():
    # one hypothesis speaker over both turns: 10 s mapped correct, 10 s confused
    r = diarization_error_rate(REF, [(0.0, 20.0, "h")])
    assert r.confusion == pytest.approx(0.5) and r.der == pytest.approx(0.5)
    assert r.missed == 0 and r.false_alarm == 0


def test_false_alarm_on_silence():
    r = diarization_error_rate(REF, REF + [(20.0, 25.0, "A")])
    assert r.false_alarm_seconds == pytest.approx(5.0)
    assert r.der == pytest.approx(5.0 / 20.0)


def test_overlap_with_one_hypothesis_speaker():
    ref = [(0.0, 10.0, "A"), (5.0, 10.0, "B")]  # 5 s of overlap: total 15 speaker-seconds
    r = diarization_error_rate(ref, [(0.0, 10.0, "h")])
    assert r.total == pytest.approx(15.0)
    assert r.missed_seconds == pytest.approx(5.0) and r.confusion_seconds == 0.0
    assert r.der == pytest.approx(5.0 / 15.0)
    assert diarization_error_rate(ref, [(0.0, 10.0, "h")], skip_overlap=True).der == 0.0


def test_collar_removes_boundary_errors():
    hyp = [(0.0, 10.4, "x"), (10.4, 20.0, "y")]  # speaker change 0.4 s late
    assert diarization_error_rate(REF, hyp).confusion_seconds == pytest.approx(0.4)
    # +-0.5 s around 0, 10 and 20: scored total = 20 - 0.5 - 1.0 - 0.5
    r = diarization_error_rate(REF, hyp, collar=0.5)
    assert r.der == 0.0 and r.total == pytest.approx(18.0)
    assert diarization_error_rate(REF, hyp, collar=0.3).confusion_seconds == pytest.approx(0.1)


def test_uem_restricts_scoring():
    hyp = [(0.0, 10.0, "x"), (10.0, 20.0, "x")]
    r = diarization_error_rate(REF, hyp, uem=[(0.0, 12.0)])
    assert r.total == pytest.approx(12.0) and r.confusion_seconds == pytest.approx(2.0)
    assert diarization_error_rate(REF, hyp, uem=[(0.0, 10.0)]).der == 0.0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="end < start"):
        diarization_error_rate([(2.0, 1.0, "A")], [])
    with pytest.raises(ValueError, match="collar"):
        diarization_error_rate(REF, REF, collar=-1)


def _random_annotation(rng, n_spk, duration=30.0, prefix="s"):
    """Per speaker, non-overlapping turns; different speakers overlap freely."""
    out = []
    for k in range(n_spk):
        t = float(rng.uniform(0, 3))
        while t < duration:
            d = float(rng.uniform(0.3, 4.0))
            out.append((round(t, 3), round(min(t + d, duration), 3), f"{prefix}{k}"))
            t += d + float(rng.uniform(0.2, 5.0))
    return out


@pytest.mark.parametrize("seed", range(20))
def test_matches_pyannote(seed):
    pm = pytest.importorskip("pyannote.metrics.diarization")
    from pyannote.core import Annotation, Segment, Timeline

    rng = np.random.default_rng(seed)
    ref = _random_annotation(rng, int(rng.integers(1, 4)), prefix="r")
    hyp = _random_annotation(rng, int(rng.integers(1, 5)), prefix="h")

    def to_ann(turns):
        ann = Annotation(uri="f")
        for i, (s, e, spk) in enumerate(turns):
            ann[Segment(s, e), i] = spk
        return ann

    uem = [(2.0, 12.5), (15.0, 28.0)]
    for collar in (0.0, 0.25):
        for use_uem in (False, True):
            metric = pm.DiarizationErrorRate(collar=2 * collar)  # pyannote: total width
            kwargs = {"uem": Timeline([Segment(s, e) for s, e in uem])} if use_uem else {}
            with warnings.catch_warnings():  # "uem was approximated" when none is given
                warnings.simplefilter("ignore")
                comp = metric(to_ann(ref), to_ann(hyp), detailed=True, **kwargs)
            ours = diarization_error_rate(ref, hyp, collar=collar, uem=uem if use_uem else None)
            assert ours.total == pytest.approx(comp["total"], abs=1e-6)
            assert ours.der == pytest.approx(comp["diarization error rate"], abs=1e-6)
            assert ours.missed_seconds == pytest.approx(comp["missed detection"], abs=1e-6)
            assert ours.false_alarm_seconds == pytest.approx(comp["false alarm"], abs=1e-6)
            assert ours.confusion_seconds == pytest.approx(comp["confusion"], abs=1e-6)

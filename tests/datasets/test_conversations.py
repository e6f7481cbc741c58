"""datasets/conversations.py: conversations cut from single-speaker recordings, exact turns."""

import sys

sys.modules.setdefault("ray", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datasets.conversations import build_conversation  # noqa: E402

SR = 1000  # a low rate keeps the arrays small; the function is rate-agnostic


def test_turns_are_exact_and_follow_the_rules():
    rng = np.random.default_rng(0)
    recs = [rng.standard_normal(20 * SR).astype(np.float32) + 10 * i for i in range(3)]
    wav, turns = build_conversation(recs, ["a", "b", "c"], SR, seconds=30.0, seed=4)
    assert wav.dtype == np.float32 and wav.size <= 31 * SR
    assert {t[2] for t in turns} == {"a", "b", "c"}  # every speaker speaks
    assert len({t[2] for t in turns[:3]}) == 3  # each speaker once before any repeats
    assert all(x[2] != y[2] for x, y in zip(turns, turns[1:], strict=False))  # no self-turns
    assert all(x[1] < y[0] for x, y in zip(turns, turns[1:], strict=False))  # pauses between
    pos = {"a": 0, "b": 0, "c": 0}
    for start, end, name in turns:  # each turn is the next stretch of that speaker's recording
        i = "abc".index(name)
        a, b = int(round(start * SR)), int(round(end * SR))
        np.testing.assert_array_equal(wav[a:b], recs[i][pos[name] : pos[name] + b - a])
        pos[name] += b - a
        assert 2.0 * SR - 1 <= b - a <= 6.0 * SR + 1 or end >= 29.0
    gaps = np.concatenate(
        [
            wav[int(round(x[1] * SR)) : int(round(y[0] * SR))]
            for x, y in zip(turns, turns[1:], strict=False)
        ]
    )
    assert np.all(gaps == 0)
    same = build_conversation(recs, ["a", "b", "c"], SR, seconds=30.0, seed=4)
    assert same[1] == turns  # seeded


def test_short_recordings_end_the_conversation_and_bad_input():
    recs = [np.ones(3 * SR, np.float32), np.ones(3 * SR, np.float32)]
    wav, turns = build_conversation(recs, ["a", "b"], SR, seconds=30.0, seed=0)
    assert wav.size < 8 * SR and turns[-1][1] <= 6.5  # both recordings used up
    with pytest.raises(ValueError, match="one name per recording"):
        build_conversation(recs, ["a"], SR)
    with pytest.raises(ValueError, match="seconds"):
        build_conversation(recs, ["a", "b"], SR, seconds=0)

import sys

sys.modules.setdefault("ray", None)

import pytest  # noqa: E402

from datasets.rttm import (  # noqa: E402
    RTTMError,
    format_rttm,
    parse_rttm,
    parse_uem,
    read_rttm,
    read_uem,
    write_rttm,
)

TEXT = """\
;; comment
SPEAKER rec1 1 6.690 0.430 <NA> <NA> speaker90 <NA> <NA>
SPKR-INFO rec1 1 <NA> <NA> <NA> unknown speaker90 <NA> <NA>

SPEAKER rec1 1 0.500 1.250 <NA> <NA> speaker91 <NA> <NA>
SPEAKER rec2 1 3 2 <NA> <NA> A
"""


def test_parse_groups_by_uri_and_sorts():
    out = parse_rttm(TEXT)
    assert set(out) == {"rec1", "rec2"}
    assert out["rec1"] == [(0.5, 1.75, "speaker91"), (6.69, pytest.approx(7.12), "speaker90")]
    assert out["rec2"] == [(3.0, 5.0, "A")]


def test_write_read_round_trip(tmp_path):
    turns = [(0.0, 1.5, "SPEAKER_00"), (1.5, 4.25, "SPEAKER_01"), (5.0, 6.0, "SPEAKER_00")]
    path = write_rttm(tmp_path / "sub" / "a.rttm", "a", turns)
    back = read_rttm(path)["a"]
    assert [(s, pytest.approx(e), k) for s, e, k in back] == turns
    assert format_rttm("a", turns).count("\n") == 3


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("SPEAKER r 1 1.0", "at least 8 fields"),
        ("SPEAKER r 1 abc 1.0 <NA> <NA> A", "onset 'abc' is not a number"),
        ("SPEAKER r 1 1.0 -2 <NA> <NA> A", "duration must be"),
        ("SPEAKER r 1 nan 1 <NA> <NA> A", "onset must be"),
    ],
)
def test_malformed_lines_name_the_line(line, match):
    with pytest.raises(RTTMError, match=match) as info:
        parse_rttm("SPEAKER r 1 0 1 <NA> <NA> A\n" + line + "\n", source="x.rttm")
    assert "x.rttm:2:" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_format_rejects_bad_labels():
    with pytest.raises(ValueError, match="whitespace"):
        format_rttm("a b", [])
    with pytest.raises(ValueError, match="whitespace"):
        format_rttm("a", [(0, 1, "two words")])


def test_uem(tmp_path):
    p = tmp_path / "all.uem"
    p.write_text("rec1 1 0.0 10.0\nrec1 1 12.0 20.5\n# c\nrec2 1 0 3\n")
    assert read_uem(p) == {"rec1": [(0.0, 10.0), (12.0, 20.5)], "rec2": [(0.0, 3.0)]}
    with pytest.raises(RTTMError, match=":1: a UEM line"):
        parse_uem("rec1 1 0.0\n")
    with pytest.raises(RTTMError, match="before start"):
        parse_uem("rec1 1 5 3\n")

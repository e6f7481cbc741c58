"""LegacyModes (``serve/store/legacy.py``): the older servers' modes over the enrollment database,
the active mode and the custom gallery persisting in the file. Ray-free; a real SQLite file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

sys.modules.setdefault("ray", None)  # the store must not need Ray

from serve.store import SpeakerStore, StoreError, UnknownGroupError  # noqa: E402
from serve.store.legacy import ALL, CUSTOM, LegacyModes  # noqa: E402

D = 8
MODEL = "campplus:abc123"


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_modes_are_groups_all_is_everyone_and_the_mode_persists(tmp_path):
    rng = np.random.default_rng(0)
    with SpeakerStore(tmp_path / "spk.db") as store:
        modes = LegacyModes(store)
        assert modes.mode == ALL and modes.gallery().labels == []
        ann = store.enroll("ann", _unit(rng, 2), groups=("ai",), model_id=MODEL)
        store.enroll("bob", _unit(rng), groups=("morning",), model_id=MODEL)
        store.enroll("cy", _unit(rng), groups=("ai", "morning"), model_id=MODEL)
        assert modes.gallery().labels == ["ann", "bob", "cy"]
        g = modes.set_mode("ai")
        assert (g.mode, g.labels) == ("ai", ["ann", "cy"]) and modes.mode == "ai"
        # the rows are the speakers' unit centroids, as identification searches them
        np.testing.assert_allclose(g.matrix[0], store.gallery("ai")[2][0])
        assert np.allclose(np.linalg.norm(g.matrix, axis=1), 1.0, atol=1e-5)
        assert store.gallery("ai")[0][0] == ann.id
        with pytest.raises(UnknownGroupError, match="'nope'"):
            modes.set_mode("nope")
        assert modes.mode == "ai"  # an unknown mode leaves the active one alone
        with pytest.raises(UnknownGroupError, match="ModifyFeatsCustom"):
            modes.set_mode(CUSTOM)  # nothing uploaded yet
        with pytest.raises(StoreError, match="non-empty"):
            modes.set_mode("  ")
    with SpeakerStore(tmp_path / "spk.db") as store:  # a restart keeps the active mode
        modes = LegacyModes(store)
        assert modes.mode == "ai" and modes.gallery().labels == ["ann", "cy"]
        assert modes.reset().labels == ["ann", "bob", "cy"] and modes.mode == ALL


def test_custom_gallery_is_kept_apart_from_enrollments_and_persists(tmp_path):
    rng = np.random.default_rng(1)
    feats = 3.0 * _unit(rng, 3)  # raw (not unit) rows, as a client may send them
    with SpeakerStore(tmp_path / "spk.db") as store:
        store.enroll("ann", _unit(rng), model_id=MODEL)
        modes = LegacyModes(store)
        g = modes.set_custom(["x", "y", "x"], feats)
        assert (g.mode, g.labels, modes.mode) == (CUSTOM, ["x", "y", "x"], CUSTOM)
        np.testing.assert_allclose(g.matrix, feats / 3.0, atol=1e-6)
        assert [s.name for s in store.list_speakers()] == ["ann"]  # not enrolled speakers
        assert modes.gallery(ALL).labels == ["ann"]
        with pytest.raises(StoreError, match="2 labels for 3 feats"):
            modes.set_custom(["a", "b"], feats)
        with pytest.raises(StoreError, match="NaN"):
            modes.set_custom(["a"], np.full((1, D), np.nan))
        assert modes.gallery().labels == ["x", "y", "x"]  # a refused upload changes nothing
        modes.reset()
    with SpeakerStore(tmp_path / "spk.db") as store:
        modes = LegacyModes(store)
        assert modes.mode == ALL
        g = modes.set_mode(CUSTOM)  # the uploaded gallery survives the restart and the reset
        assert g.labels == ["x", "y", "x"]
        np.testing.assert_allclose(g.matrix, feats / 3.0, atol=1e-6)
        g = modes.set_custom(["z"], feats[:1])  # a new upload replaces it
        assert modes.gallery().labels == ["z"] and g.matrix.shape == (1, D)

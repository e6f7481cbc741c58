"""The strict config loader: unknown keys, types, overrides, round trips."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest

sys.modules.setdefault("ray", None)

from models.config import ConfigError, apply_overrides, from_dict, to_dict  # noqa: E402


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    layers: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None


def test_round_trip():
    cfg = from_dict(Outer, {"name": "y", "inner": {"lr": 3, "betas": [0.8, 0.9]}, "maybe": 4})
    assert cfg.inner.lr == 3.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.betas == (0.8, 0.9)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_names_path_and_valid_keys():
    with pytest.raises(ConfigError, match=r"inner: unknown key\(s\) \['lrr'\].*valid keys.*lr"):
        from_dict(Outer, {"inner": {"lrr": 1.0}})


@pytest.mark.parametrize(
    "data, msg",
    [
        ({"mode": "c"}, "not one of"),
        ({"layers": [1, "x"]}, r"layers\[1\]: expected an integer"),
        ({"inner": {"lr": "fast"}}, "inner.lr: expected a number"),
        ({"inner": {"betas": [1.0]}}, "expected 2 items"),
        ({"name": 3}, "expected a string"),
        ({"maybe": True}, "maybe"),
    ],
)
def test_type_errors(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(Outer, data)


def test_overrides_parse_yaml_values():
    data = {"inner": {"lr": 1.0}}
    apply_overrides(data, ["inner.lr=3e-4", "layers=[4, 5]", "mode=b", "maybe=null"])
    cfg = from_dict(Outer, data)
    assert cfg.inner.lr == 3e-4 and cfg.layers == [4, 5] and cfg.mode == "b" and cfg.maybe is None
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["inner.lr"])

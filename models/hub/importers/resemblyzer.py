"""Importer of resemblyzer's GE2E voice encoder (``VoiceEncoder`` state dicts).

The ``resemblyzer`` wheel (Resemble AI, Apache-2.0) ships trained weights as
``resemblyzer/pretrained.pt``: ``{"step", "model_state", "optimizer_state"}``, where
``model_state`` holds ``lstm.{weight,bias}_{ih,hh}_l<k>``, ``linear.{weight,bias}`` and the
GE2E loss's learned scale and offset (``similarity_weight``, ``similarity_bias``), which only
training uses. Our ``ge2e`` model (``models/speaker/ge2e.py``) carries the network's keys as they
are; its sizes are read off the shapes, so a ``VoiceEncoder`` trained with other sizes imports too.

``PRETRAINED`` names the installed wheel's weights; :func:`import_installed` converts them with no
input file and no network (the by-name resolver caches the result).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from pathlib import Path

from torch import Tensor

from models.hub.importers import ImportedModel
from models.registry import build_model

LAYOUT = "resemblyzer"
PRETRAINED = "pip:resemblyzer"  # the name the model goes by: the weights of the installed wheel
PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
ARCH = "voice_encoder"  # resemblyzer's class: VoiceEncoder

# Training-only entries of the published state dict (the GE2E similarity scale w and bias b).
TRAINING_ONLY = ("similarity_weight", "similarity_bias")
_LSTM_KEY = re.compile(r"lstm\.(weight|bias)_(ih|hh)_l(\d+)")


def _num_layers(state: dict[str, Tensor]) -> int:
    layers = {int(m.group(3)) for k in state if (m := _LSTM_KEY.fullmatch(k))}
    return max(layers) + 1 if layers else 0


def detect(state: dict[str, Tensor]) -> str | None:
    """``"voice_encoder"`` when ``state`` has exactly a VoiceEncoder's keys, else ``None``."""
    layers = _num_layers(state)
    if layers == 0:
        return None
    want = {
        f"lstm.{w}_{g}_l{k}"
        for k in range(layers)
        for w in ("weight", "bias")
        for g in "ih hh".split()
    }
    want |= {"linear.weight", "linear.bias"}
    keys = set(state) - set(TRAINING_ONLY)
    return ARCH if keys == want else None


def convert(state: dict[str, Tensor], arch: str | None = None) -> ImportedModel:
    """A VoiceEncoder state dict -> our ``ge2e`` model (sizes from the shapes), eval mode."""
    found = detect(state)
    if found is None:
        raise ValueError(
            "not a resemblyzer VoiceEncoder state dict: expected lstm.{weight,bias}_{ih,hh}_l<k> "
            f"and linear.{{weight,bias}}, got keys {sorted(state)[:8]}..."
        )
    if arch is not None and arch != found:
        raise KeyError(f"unknown resemblyzer arch {arch!r}; known: {ARCH}")
    hidden = state["lstm.weight_hh_l0"].shape[1]
    config = {
        "feat_dim": int(state["lstm.weight_ih_l0"].shape[1]),
        "hidden_dim": int(hidden),
        "num_layers": _num_layers(state),
        "embed_dim": int(state["linear.weight"].shape[0]),
    }
    model = build_model("ge2e", config)
    weights = {k: v for k, v in state.items() if k not in TRAINING_ONLY}
    model.load_state_dict(weights, strict=True)
    dropped = sorted(set(state) & set(TRAINING_ONLY))
    meta = {"source": LAYOUT, "arch": found, "dropped_keys": dropped}
    return ImportedModel(model=model.eval(), arch=found, meta=meta)


def installed_weights() -> Path:
    """The installed ``resemblyzer`` package's ``pretrained.pt`` (the package is not imported:
    importing it loads librosa, which finding a file does not need)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {PACKAGE!r} package is not installed; `uv sync` installs it (a voxray dependency)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {PACKAGE} (`uv sync --reinstall`)")
    return path


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """A resemblyzer weights file (``{"model_state": ...}`` or a bare state dict) -> tensors,
    read as every published file is (``models.hub.resolve.load_state_dict``)."""
    from models.hub.resolve import load_state_dict  # resolve imports this package

    return load_state_dict(path)


def import_file(path: str | Path) -> ImportedModel:
    """Read and convert a VoiceEncoder weights file; provenance (file, sha256) in ``meta``."""
    path = Path(path)
    imported = convert(read_weights(path))
    imported.meta.update(
        source_file=path.name, source_sha256=hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    )
    return imported


def default_source() -> Path:
    """Where ``pip:resemblyzer`` finds its weights (``models.hub.resolve``): the wheel's file."""
    return installed_weights()


def import_installed() -> ImportedModel:
    """The ``PRETRAINED`` model: the installed wheel's weights, converted (no network)."""
    imported = import_file(installed_weights())
    imported.meta.update(name=PRETRAINED, package_version=importlib.metadata.version(PACKAGE))
    return imported

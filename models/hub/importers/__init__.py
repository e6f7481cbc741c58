"""Importers of published speaker-model layouts, one module per layout, found by name.

Each ``models/hub/importers/<layout>.py`` (``threedspeaker``, ``wespeaker``, ``speechbrain``,
``resemblyzer``, ...) defines

    LAYOUT: str                                     # the ``--from`` name, e.g. "3dspeaker"
    def detect(state: dict[str, Tensor]) -> str | None      # our arch name, or None
    def convert(state: dict[str, Tensor], arch: str | None = None) -> ImportedModel
    def default_source() -> Path                    # optional: where the weights are when the
                                                    # layout ships them (a pip package); then
                                                    # ``import_checkpoint`` needs no input file

``convert`` is pure: tensors in, a built voxray model (eval mode, weights loaded strictly) and
provenance out. Reading the file and saving the checkpoint is the caller's job
(``save_checkpoint(imported.model, path, meta=imported.meta)``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
from torch import nn

from models.registry import build_model, get_preset, list_presets


@dataclass
class ImportedModel:
    model: nn.Module  # the voxray model, weights loaded, eval mode
    arch: str  # the publisher's architecture name (e.g. "campplus_192", "resnet34")
    meta: dict[str, Any] = field(default_factory=dict)  # provenance stored in the checkpoint


def layouts() -> dict[str, ModuleType]:
    """``LAYOUT`` name -> importer module, for every module of this package."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        layout = getattr(module, "LAYOUT", None)
        if layout is not None:
            found[layout] = module
    return found


def importer(layout: str) -> ModuleType:
    """The importer module of ``layout``; a ``KeyError`` lists the known layouts."""
    known = layouts()
    if layout not in known:
        raise KeyError(f"unknown checkpoint layout {layout!r}; known: {', '.join(sorted(known))}")
    return known[layout]


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """A bare state dict, or the common wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
    Lightning's ``{"state_dict": ..., "hyper_parameters": ...}``); ``module.`` (DataParallel)
    prefixes removed."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    for key in ("state_dict", "model", "embedding_model", "model_state_dict", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return unwrap_state_dict(obj[key])
    raise ValueError("the file holds no state dict of tensors")


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@functools.cache
def preset_shapes(preset: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``build_model(preset)``'s state dict (built once per process; on CPU,
    since ``normal_`` on the meta device imports torch._dynamo, which is slower)."""
    return shapes(build_model(preset).state_dict())


def match_preset(
    state: dict[str, torch.Tensor], prefix: str, signatures: dict[str, str] | None = None
) -> str | None:
    """The preset named ``<prefix><entry>`` whose state-dict keys and shapes equal ``state``'s
    exactly, or ``None``. Detection by the whole layout, not by a few keys, so two entries
    that differ in one width cannot be confused. ``signatures`` (model name -> a key only that
    family has) skips building the presets of other families."""
    want = shapes(state)
    for preset in list_presets():
        if not preset.startswith(prefix):
            continue
        if signatures is not None:
            key = signatures.get(get_preset(preset).model_name)
            if key is None or key not in want:
                continue
        if preset_shapes(preset) == want:
            return preset[len(prefix) :]
    return None


def load_into_preset(
    state: dict[str, torch.Tensor], preset: str, what: str, cfg: Any = None
) -> nn.Module:
    """``build_model(preset, cfg)`` (a preset or model name, ``cfg`` overrides as in
    ``build_model``) with ``state`` loaded strictly, in eval mode; a ``ValueError`` that names
    ``what`` (the publisher's arch) when keys or shapes differ."""
    model = build_model(preset, cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the state dict does not match {what}: {exc}") from exc
    return model.eval()


def known_entries(prefix: str) -> list[str]:
    return sorted(p[len(prefix) :] for p in list_presets() if p.startswith(prefix))


def choose_arch(
    state: dict[str, torch.Tensor],
    arch: str | None,
    prefix: str,
    layout: str,
    signatures: dict[str, str] | None = None,
) -> str:
    """``arch`` checked against the presets ``<prefix>*``, or detected from ``state``."""
    known = known_entries(prefix)
    if arch is not None:
        if arch not in known:
            raise KeyError(f"unknown {layout} arch {arch!r}; known: {', '.join(known)}")
        return arch
    found = match_preset(state, prefix, signatures)
    if found is None:
        raise ValueError(
            f"cannot detect the {layout} architecture from the state dict (no preset "
            f"{prefix}* has its keys and shapes); give --arch, one of: {', '.join(known)}"
        )
    return found

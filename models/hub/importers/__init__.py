"""Importers of published speaker-model layouts, one module per layout, found by name.

Each ``models/hub/importers/<layout>.py`` (``threedspeaker``, ``wespeaker``, ``speechbrain``,
``resemblyzer``, ...) defines

    LAYOUT: str                                     # the ``--from`` name, e.g. "3dspeaker"
    def detect(state: dict[str, Tensor]) -> str | None      # our arch name, or None
    def convert(state: dict[str, Tensor], arch: str | None = None) -> ImportedModel

``convert`` is pure: tensors in, a built voxray model (eval mode, weights loaded strictly) and
provenance out. Reading the file and saving the checkpoint is the caller's job
(``save_checkpoint(imported.model, path, meta=imported.meta)``).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from torch import nn


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

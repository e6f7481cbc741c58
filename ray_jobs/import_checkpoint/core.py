"""Convert a published checkpoint into a voxray checkpoint (Ray-free; the CLI is
``ray_jobs/import_checkpoint/cli.py``).

3D-Speaker publishes plain state dicts (``.bin``/``.ckpt``); their layout is the reference
listed in ``shared/reference/3dspeaker_state_dicts.json``. Each entry name maps to our preset
``3dspeaker/<entry>`` whose state-dict keys and shapes are identical, so the weights load with
``strict=True`` and ``models.load_model(OUT.pt)`` rebuilds the model.

``resemblyzer``: the GE2E voice encoder whose weights ship inside the ``resemblyzer`` wheel (no
input file needed), or a VoiceEncoder weights file; ``models/hub/importers/resemblyzer.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from models import build_model, list_presets, save_checkpoint

SOURCES = ("3dspeaker", "resemblyzer")


def _unwrap(obj: Any) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the common wrappers ({"state_dict": ...}, {"model": ...})."""
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in ("state_dict", "model", "embedding_model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return _unwrap(obj[key])
    raise ValueError("the file holds no state dict of tensors")


def import_3dspeaker(arch: str, src: str | Path, dst: str | Path) -> Path:
    """3D-Speaker state dict ``src`` -> voxray checkpoint ``dst`` of preset ``3dspeaker/<arch>``."""
    preset = f"3dspeaker/{arch}"
    known = [p.split("/", 1)[1] for p in list_presets() if p.startswith("3dspeaker/")]
    if preset not in list_presets():
        raise KeyError(f"unknown 3D-Speaker arch {arch!r}; known: {', '.join(sorted(known))}")
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    try:
        raw = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{src} is not a readable PyTorch checkpoint: {exc}") from exc
    state = {k.removeprefix("module."): v for k, v in _unwrap(raw).items()}
    model = build_model(preset)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{src} does not match 3D-Speaker {arch}: {exc}") from exc
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    meta = {"source": "3dspeaker", "arch": arch, "source_file": src.name, "source_sha256": digest}
    return save_checkpoint(model.eval(), dst, meta=meta)


def import_resemblyzer(dst: str | Path, src: str | Path | None = None) -> Path:
    """resemblyzer VoiceEncoder weights -> voxray ``ge2e`` checkpoint ``dst``; ``src=None``: the
    weights inside the installed ``resemblyzer`` wheel."""
    from models.hub.importers import resemblyzer

    imported = resemblyzer.import_installed() if src is None else resemblyzer.import_file(src)
    return save_checkpoint(imported.model, dst, meta=imported.meta)

"""voxray models: plain PyTorch, no Ray, no I/O beyond checkpoint files (and ``models/hub``,
which fetches published models by name into the cache: see its docstring)."""

from __future__ import annotations

from models.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from models.config import ConfigError, from_dict, to_dict
from models.registry import (
    build_model,
    get_entry,
    get_preset,
    list_models,
    list_presets,
    register_model,
    register_preset,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "build_model",
    "from_dict",
    "get_entry",
    "get_preset",
    "list_models",
    "list_presets",
    "load_model",
    "read_checkpoint",
    "register_model",
    "register_preset",
    "save_checkpoint",
    "to_dict",
]

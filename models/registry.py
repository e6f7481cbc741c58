"""One registry for every model family (speaker, tse, codec, classify).

``@register_model("campplus", CAMPPlusConfig)`` fills one dict; ``build_model(name, cfg)`` builds
from a registered name or a preset name. Presets are named config instances
(``campplus-tiny``, ``tinystream-medium``), never copied files. Every registered model must have a
``<name>-tiny`` preset; ``tests/models/test_contract.py`` enforces it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from models.config import from_dict, to_dict


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type[nn.Module]
    config_cls: type
    family: str


@dataclass(frozen=True)
class Preset:
    name: str
    model_name: str
    config: Any
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}
_PRESETS: dict[str, Preset] = {}


def register_model(name: str, config_cls: type, family: str) -> Callable[[type], type]:
    """Class decorator: register ``cls(cfg)`` under ``name`` with its frozen config dataclass.

    ``family`` groups models that share an input/output contract: ``speaker`` (fbank
    ``(B, T, n_mels)`` -> ``(B, D)``), ``tse``, ``codec``, ``classify``.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls for {name!r} must be a dataclass, got {config_cls!r}")

    def deco(cls: type) -> type:
        if name in _MODELS and _MODELS[name].cls is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].cls}")
        _MODELS[name] = ModelEntry(name=name, cls=cls, config_cls=config_cls, family=family)
        cls.registry_name = name
        return cls

    return deco


def register_preset(name: str, model_name: str, config: Any, description: str = "") -> Preset:
    """Register a named config instance of a registered model."""
    if name in _PRESETS and _PRESETS[name].config != config:
        raise ValueError(f"preset {name!r} is already registered with a different config")
    preset = Preset(name=name, model_name=model_name, config=config, description=description)
    _PRESETS[name] = preset
    return preset


# Sub-packages of ``models`` that hold shared parts, not a model family.
_NOT_FAMILIES = frozenset({"layers", "losses", "pipelines", "tasks"})


@functools.cache
def import_submodules(package: str) -> tuple[str, ...]:
    """Import every module below ``package`` (running its ``@register_*`` decorators).

    Registration is by discovery: a new model file, family package or task module registers
    itself by existing, with no import list to extend. Cached: the package tree is walked once
    per process, not on every ``build_model`` / ``get_entry``.
    """
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
    return tuple(names)


@functools.cache
def _ensure_loaded() -> None:
    import models

    for info in pkgutil.iter_modules(models.__path__):
        if info.ispkg and info.name not in _NOT_FAMILIES:
            import_submodules(f"models.{info.name}")


def list_models(family: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(n for n, e in _MODELS.items() if family is None or e.family == family)


def list_presets(model_name: str | None = None) -> list[str]:
    _ensure_loaded()
    return sorted(
        n for n, p in _PRESETS.items() if model_name is None or p.model_name == model_name
    )


def get_entry(name: str) -> ModelEntry:
    _ensure_loaded()
    if name not in _MODELS:
        raise KeyError(
            f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}; "
            f"known presets: {', '.join(sorted(_PRESETS))}"
        )
    return _MODELS[name]


def get_preset(name: str) -> Preset:
    _ensure_loaded()
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(sorted(_PRESETS))}")
    return _PRESETS[name]


def resolve(name: str, cfg: Any = None) -> tuple[ModelEntry, Any]:
    """Turn ``(name, cfg)`` into ``(entry, config instance)``.

    ``name`` is a model name or a preset name. ``cfg`` is ``None`` (defaults, or the preset's
    config), a config instance, or a mapping of overrides applied strictly on top of the
    defaults/preset (unknown keys raise).
    """
    _ensure_loaded()
    if name in _PRESETS:
        preset = _PRESETS[name]
        entry = _MODELS[preset.model_name]
        base = preset.config
    elif name in _MODELS:
        entry = _MODELS[name]
        base = entry.config_cls()
    else:
        get_entry(name)  # raises the KeyError listing known names
        raise AssertionError("unreachable")
    if cfg is None:
        return entry, base
    if isinstance(cfg, entry.config_cls):
        return entry, cfg
    if isinstance(cfg, Mapping):
        merged = to_dict(base)
        merged.update(cfg)
        return entry, from_dict(entry.config_cls, merged, path=f"model[{name}].config")
    raise TypeError(f"cfg for {name!r} must be None, a mapping or {entry.config_cls.__name__}")


def build_model(name: str, cfg: Any = None) -> nn.Module:
    """Build a registered model (or preset) in training mode. See ``resolve`` for ``cfg``."""
    entry, config = resolve(name, cfg)
    return entry.cls(config)


# --- tasks -------------------------------------------------------------------------------------
# Training tasks (speaker, tse, codec, classify) live in models/tasks/ and register here, so the
# one training entry point can build any of them by name.


@dataclass(frozen=True)
class TaskEntry:
    name: str
    cls: type
    config_cls: type


_TASKS: dict[str, TaskEntry] = {}


def register_task(name: str, config_cls: type) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        _TASKS[name] = TaskEntry(name=name, cls=cls, config_cls=config_cls)
        return cls

    return deco


def resolve_task(name: str, cfg: Mapping[str, Any] | None = None) -> tuple[TaskEntry, Any]:
    import_submodules("models.tasks")
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}")
    entry = _TASKS[name]
    if cfg is not None and isinstance(cfg, entry.config_cls):
        return entry, cfg
    return entry, from_dict(entry.config_cls, dict(cfg or {}), path=f"task[{name}].config")


def list_tasks() -> list[str]:
    import_submodules("models.tasks")
    return sorted(_TASKS)

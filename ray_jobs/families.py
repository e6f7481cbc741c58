"""Find a model family's part of a job by name: ``<package>.<family>``.

Train, evaluate and export plug families in the same way: the family's training-data builder is
``ray_jobs/train/data/<family>.py``, its evaluator CLI ``ray_jobs/evaluate/cli/<family>.py``, its
ONNX exporter ``ray_jobs/export/<family>.py``. A new family adds those modules and edits no
dispatcher. The family name is ``models.registry.get_entry(name).family`` (for training, the
task name, which is the family's).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from models.config import ConfigError


class UnknownFamilyError(ConfigError):
    """No module of this job serves the family (a ``ConfigError``: the user can fix the input)."""


def family_module(package: str, family: str, hook: str, what: str) -> ModuleType:
    """Import ``<package>.<family>`` and check it defines ``hook``; else raise
    :class:`UnknownFamilyError` listing the families the package serves."""
    if family.isidentifier():
        name = f"{package}.{family}"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the module exists but one of its imports is missing
                raise
        else:
            if hasattr(module, hook):
                return module
    raise UnknownFamilyError(
        f"no {what} for the {family!r} family (looked for {hook}() in {package}.{family}); "
        f"families with one: {', '.join(known_families(package, hook)) or 'none'}"
    )


def known_families(package: str, hook: str) -> list[str]:
    """The modules of ``package`` that define ``hook``: the families it serves."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        try:
            module = importlib.import_module(f"{package}.{info.name}")
        except ImportError:  # a listing for a message: a broken sibling must not mask the error
            continue
        if hasattr(module, hook):
            names.append(info.name)
    return sorted(names)

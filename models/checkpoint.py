"""Self-describing checkpoints: one format for every model.

A checkpoint is a dict holding only tensors and primitives, so ``torch.load(weights_only=True)``
works and no class is ever unpickled::

    {"format": "voxray.checkpoint/1", "model_name": "campplus", "config": {...},
     "state_dict": {...}, "meta": {...}, "train_state": {...}  # optional, ignored by load_model}

``train_state`` carries training-only parts (margin heads, discriminators, optimizer and scheduler
state, step counters); ``load_model`` never reads it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.config import to_dict
from models.registry import resolve

FORMAT = "voxray.checkpoint/1"


class CheckpointError(ValueError):
    """The file is not a voxray checkpoint or does not match its model."""


def model_config(model: nn.Module) -> Any:
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise CheckpointError(f"{type(model).__name__} has no .cfg; registered models keep theirs")
    return cfg


def make_checkpoint(
    model: nn.Module,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    name = getattr(model, "registry_name", None)
    if name is None:
        raise CheckpointError(f"{type(model).__name__} is not a registered model")
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "model_name": name,
        "config": to_dict(model_config(model)),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write a file all-or-nothing: yields a temporary path in ``path``'s folder to write to;
    when the block ends without error the file is flushed to disk (fsync) and renamed onto
    ``path`` (``os.replace``, atomic on one filesystem), and the folder entry is synced. When the
    block raises, the temporary file is removed and ``path`` keeps its old content (or stays
    absent): a crash never leaves a truncated checkpoint or report behind.

    The one way voxray writes final outputs (checkpoints, ``model.pt`` copies, reports)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed (or replaced) its handle
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` fills a temporary file that then replaces ``path`` atomically
    (:func:`atomic_path`); returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (the directory entry); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    meta: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write atomically (:func:`atomic_path`) so a crash never leaves a half-written checkpoint."""
    ckpt = make_checkpoint(model, meta=meta, train_state=train_state)
    return atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict of ``path``: a voxray checkpoint file, or a published model by name
    (``modelscope:...``, ``hf:...``, ``pip:...``; downloaded and converted once, see
    ``models.hub.resolve_checkpoint``)."""
    # Imported here: models.hub builds on this module (it saves the checkpoints it converts).
    from models.hub.resolve import resolve_checkpoint

    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/truncated/pickled-object files
        raise CheckpointError(f"{path} is not a readable voxray checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and "format" not in ckpt:
            hint = (
                " It looks like a plain state dict; convert it with "
                "`python -m ray_jobs.import_checkpoint [--from LAYOUT] [--arch NAME] IN OUT`."
            )
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint.{hint}")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    entry, cfg = resolve(ckpt["model_name"], ckpt["config"])
    model = entry.cls(cfg)
    missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"state dict does not match {ckpt['model_name']}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.eval()


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model stored in a voxray checkpoint (a path or a model name, see
    ``read_checkpoint``), in eval mode, on CPU."""
    return model_from_checkpoint(read_checkpoint(path))

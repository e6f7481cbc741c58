"""Published speaker models by name: ``modelscope:<id>``, ``hf:<repo>[@rev][/file]``, ``pip:<package>``.

Converting a published state dict into a voxray checkpoint is pure PyTorch and lives in
``models/hub/importers/`` (one module per publisher's layout). ``resolve.py`` turns a spec (a
path or a name) into a voxray checkpoint file, and ``download.py`` is the one module that talks
to a hub. Why this is under ``models/`` although it reads files and the network:
``models.load_model`` accepts a model by name (the pretrained on-ramp), and ``models/`` is the
lowest layer that both Serve and the jobs import.
"""

from __future__ import annotations

from models.hub.download import HubError, cache_root, offline
from models.hub.resolve import SCHEMES, convert_file, parse_spec, resolve_checkpoint

__all__ = [
    "SCHEMES",
    "HubError",
    "cache_root",
    "convert_file",
    "offline",
    "parse_spec",
    "resolve_checkpoint",
]

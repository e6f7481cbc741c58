"""Speaker-embedding models: fbank ``(B, T, n_mels)`` -> embedding ``(B, D)`` (not normalised).

Importing this package registers every speaker model and its presets. 3D-Speaker compatible
configurations are registered as presets named ``3dspeaker/<entry>`` after the entries of
``shared/reference/3dspeaker_state_dicts.json``.
"""

from __future__ import annotations

import importlib

# Each module registers its models on import; a module that is not written yet is skipped so the
# family can grow one architecture at a time.
for _mod in ("campplus", "eres2net", "ecapa_tdnn", "resnet", "xvector"):
    try:
        importlib.import_module(f"models.speaker.{_mod}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"models.speaker.{_mod}":
            raise

"""Speaker-embedding models: fbank ``(B, T, n_mels)`` -> embedding ``(B, D)`` (not normalised).

Importing this package registers every speaker model and its presets. 3D-Speaker compatible
configurations are registered as presets named ``3dspeaker/<entry>`` after the entries of
``shared/reference/3dspeaker_state_dicts.json``.
"""

from __future__ import annotations

from models.speaker import campplus, ecapa_tdnn, eres2net, resnet, xvector  # noqa: F401

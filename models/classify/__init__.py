"""Sound classifiers: raw waveform ``(B, T)`` -> logits ``(B, num_classes)``.

Importing this package registers ``acdnet`` and its presets (``acdnet``, ``micro-acdnet``,
``acdnet-tiny``).
"""

from __future__ import annotations

from models.classify import acdnet  # noqa: F401  (registers the model)
from models.classify.acdnet import ACDNet, ACDNetConfig

__all__ = ["ACDNet", "ACDNetConfig"]

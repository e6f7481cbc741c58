"""Neural audio codecs: waveform ``(B, 1, T)`` -> codes ``(B, n_q, frames)`` -> waveform.

Importing this package registers ``soundstream`` and ``tinystream`` and their presets.
``discriminators`` holds training-only parts (not registered models).
"""

from __future__ import annotations

from models.codec import discriminators, quantize, soundstream  # noqa: F401  (registers models)
from models.codec.quantize import QuantizedOutput, ResidualVQ
from models.codec.soundstream import CodecOutput, SoundStream, SoundStreamConfig, TinyStream

__all__ = [
    "CodecOutput",
    "QuantizedOutput",
    "ResidualVQ",
    "SoundStream",
    "SoundStreamConfig",
    "TinyStream",
]

"""The HTTP routes of the Serve app, one module per product (speaker, diarize, tse, codec,
classify).

Each module holds its request/response models and one mixin class whose methods are FastAPI
routes on ``serve/http.py``'s app; ``serve/app.py`` composes the mixins into the ingress. A
mixin reaches the rest of the app only through ``self.ctx`` (``serve/context.py``).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile as sf


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """``(T,)`` float32 -> the bytes of a 16-bit PCM WAV file (clipped to [-1, 1])."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def binary_response(media_type: str, description: str) -> dict[str, dict[str, Any]]:
    """``responses=`` entry documenting a 200 that can also be raw ``media_type`` bytes (chosen
    by the ``Accept`` header), beside the route's JSON model."""
    return {
        "200": {
            "description": description,
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
        }
    }

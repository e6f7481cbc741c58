"""Target speaker extraction route of the ingress: ``POST /extract_target``.

A mixin of the ingress class in ``serve/app.py`` (like ``serve/speaker_routes.py``). Two audio
fields, ``mix`` (the recording) and ``ref`` (the target speaker alone, >= 0.5 s), come as JSON
(base64 or an allow-listed path) or as multipart uploads; ``serve/audio_input.py`` decodes them
at the model's rate (48 kHz) and refuses a mixture longer than ``max_seconds`` from its header,
before decoding. The model is the ``TSEModel`` deployment (``serve/deployments_tse.py``),
reached through ``self.product("tse", ...)``, which answers 404 when the app was started
without ``tse``. The extracted speech comes back as 16-bit PCM WAV at 48 kHz: base64 in JSON,
or the raw file with ``Accept: audio/wav`` (duration and timing then in ``X-`` headers).

Errors: bad or too-short audio 400 (``invalid_audio``, ``audio_too_short``, ...); a mixture over
``max_seconds`` 400 ``audio_too_long``; bodies over ``max_request_mb`` 413.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import asyncio
import base64
import io
import time
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict

from serve import schemas as S
from serve.audio_input import load_source
from serve.errors import ERRORS, ServiceError, request_body
from serve.http import app

MIN_REF_SECONDS = 0.5  # the pipeline's own minimum (models/pipelines/extract_target.py)


class ExtractTargetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mix: S.AudioSource  # the recording, up to max_seconds
    ref: S.AudioSource  # the target speaker alone, >= 0.5 s


class ExtractTargetResponse(BaseModel):
    audio_base64: str  # 16-bit PCM WAV file bytes at sample_rate
    sample_rate: int
    duration_s: float
    model_seconds: float  # time in the model (reference encoding + chunks)
    total_seconds: float  # time in the service: decoding, model, encoding
    real_time_factor: float  # model_seconds / duration_s


def _tse_wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


class ExtractRoutes:
    """``POST /extract_target``; uses the ingress's ``product_info``, ``audio_limits``, ``_parse``."""

    @app.post(
        "/extract_target",
        response_model=ExtractTargetResponse,
        responses=ERRORS,
        openapi_extra=request_body(ExtractTargetRequest, {"mix": False, "ref": False}),
    )
    async def extract_target(self, request: Request) -> Any:
        """Mixture + enrolment -> the enrolled speaker's speech (48 kHz WAV; base64 in JSON, or
        raw with ``Accept: audio/wav``)."""
        t0 = time.perf_counter()
        handle, info = await self.product_info("tse", "tse={checkpoint: ...}")
        req = await self._parse(request, ExtractTargetRequest, max_files=2)
        sr = int(info["sample_rate"])
        mix, ref = await asyncio.gather(
            asyncio.to_thread(
                load_source, req.mix, "mix", self.audio_limits(sr, 0.0, self.args.max_seconds)
            ),
            asyncio.to_thread(
                load_source,
                req.ref,
                "ref",
                self.audio_limits(sr, MIN_REF_SECONDS, self.args.max_seconds),
            ),
        )
        out = await handle.extract.remote(mix, ref)
        if isinstance(out, str):
            raise ServiceError(400, "invalid_audio", out)
        wav = _tse_wav_bytes(out["audio"], out["sample_rate"])
        duration = out["audio"].shape[0] / out["sample_rate"]
        rtf = out["model_seconds"] / duration if duration > 0 else 0.0
        total = time.perf_counter() - t0
        if "audio/wav" in request.headers.get("accept", ""):
            return Response(
                content=wav,
                media_type="audio/wav",
                headers={
                    "X-Duration-S": f"{duration:.3f}",
                    "X-Model-Seconds": f"{out['model_seconds']:.4f}",
                    "X-Total-Seconds": f"{total:.4f}",
                },
            )
        return ExtractTargetResponse(
            audio_base64=base64.b64encode(wav).decode(),
            sample_rate=out["sample_rate"],
            duration_s=duration,
            model_seconds=out["model_seconds"],
            total_seconds=total,
            real_time_factor=rtf,
        )

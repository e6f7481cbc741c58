"""Target speaker extraction (TSE) route of the ingress: ``POST /extract_target``.

The URL keeps its name for compatibility; in code this product is ``tse`` (embedding extraction
is ``/extract_embedding``, in ``serve/routes/speaker.py``). A route module of the ingress
(``serve/app.py``; shared state in ``self.ctx``, ``serve/context.py``). Two audio
fields, ``mix`` (the recording) and ``ref`` (the target speaker alone, >= 0.5 s), come as JSON
(base64 or an allow-listed path) or as multipart uploads; ``serve/audio_input.py`` decodes them
at the model's rate (48 kHz) and refuses a mixture longer than ``max_seconds`` from its header,
before decoding. The model is the ``TSEModel`` deployment (``serve/deployments/tse.py``),
reached through ``ctx.product("tse")``, which answers 404 when the app was started
without ``tse``. The extracted speech comes back as 16-bit PCM WAV at 48 kHz: base64 in JSON,
or the raw file with ``Accept: audio/wav`` (duration and timing then in ``X-`` headers).

Errors: bad or too-short audio 400 (``invalid_audio``, ``audio_too_short``, ...); a mixture over
``max_seconds`` 400 ``audio_too_long``; bodies over ``max_request_mb`` 413.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import asyncio
import base64
import time
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict

from serve import schemas as S
from serve.context import ServeContext
from serve.errors import ERRORS, checked, request_body
from serve.http import app
from serve.routes import binary_response, wav_bytes

MIN_REF_SECONDS = 0.5  # the pipeline's own minimum (models/pipelines/tse.py)


class TSERequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mix: S.AudioSource  # the recording, up to max_seconds
    ref: S.AudioSource  # the target speaker alone, >= 0.5 s


class TSEResponse(BaseModel):
    audio_base64: str  # 16-bit PCM WAV file bytes at sample_rate
    sample_rate: int
    duration_s: float
    model_seconds: float  # time in the model (reference encoding + chunks)
    total_seconds: float  # time in the service: decoding, model, encoding
    real_time_factor: float  # model_seconds / duration_s


class TSERoutes:
    """``POST /extract_target`` on the ``tse`` product; state is ``self.ctx``."""

    ctx: ServeContext

    @app.post(
        "/extract_target",
        response_model=TSEResponse,
        responses={
            **ERRORS,
            **binary_response(
                "audio/wav",
                "The extracted speech: JSON, or with `Accept: audio/wav` "
                "the 48 kHz 16-bit WAV file (duration and timing in `X-` headers)",
            ),
        },
        openapi_extra=request_body(TSERequest, {"mix": False, "ref": False}),
    )
    async def extract_target(self, request: Request) -> Any:
        """Mixture + enrolment -> the enrolled speaker's speech (48 kHz WAV; base64 in JSON, or
        raw with ``Accept: audio/wav``)."""
        t0 = time.perf_counter()
        handle, info = await self.ctx.product("tse")
        req = await self.ctx.parse(request, TSERequest, max_files=2)
        mix, ref = await asyncio.gather(
            self.ctx.load(req.mix, "mix", self.ctx.product_limits(info)),
            self.ctx.load(req.ref, "ref", self.ctx.product_limits(info, MIN_REF_SECONDS)),
        )
        out = checked(await handle.extract.remote(mix, ref), None)
        wav = wav_bytes(out["audio"], out["sample_rate"])
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
        return TSEResponse(
            audio_base64=base64.b64encode(wav).decode(),
            sample_rate=out["sample_rate"],
            duration_s=duration,
            model_seconds=out["model_seconds"],
            total_seconds=total,
            real_time_factor=rtf,
        )


ROUTES = TSERoutes  # found by serve.app.declared

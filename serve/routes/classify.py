"""Sound-classification route of the ingress: ``POST /classify``.

A route module of the ingress (``serve/app.py``; shared state in ``self.ctx``,
``serve/context.py``). Audio comes as JSON (base64 or an allow-listed path) or multipart,
decoded by ``serve/audio_input.py`` at the classifier's rate; the model is the ``ClassifyModel``
deployment (``serve/deployments/classify.py``, ACDNet, dynamically batched), reached through
``ctx.product("classify")``, which answers 404 when the app was started without ``classify``.

Errors: bad audio 400 (``invalid_audio`` and friends); bodies over ``max_request_mb`` 413.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from serve import schemas as S
from serve.context import ServeContext
from serve.errors import ERRORS, checked, request_body
from serve.http import app


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: S.AudioSource
    top_k: int = Field(5, ge=1, le=100)


class LabelScore(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    labels: list[LabelScore]  # most probable first
    duration_s: float


class ClassifyRoutes:
    """``POST /classify`` on the ``classify`` product; state is ``self.ctx``."""

    ctx: ServeContext

    @app.post(
        "/classify",
        response_model=ClassifyResponse,
        responses=ERRORS,
        openapi_extra=request_body(ClassifyRequest, {"audio": False}),
    )
    async def classify(self, request: Request) -> ClassifyResponse:
        """Audio -> the ``top_k`` sound-event labels with their probabilities."""
        req = await self.ctx.parse(request, ClassifyRequest, max_files=1)
        handle, info = await self.ctx.product("classify")
        limits = self.ctx.product_limits(info)
        wav = await self.ctx.load(req.audio, "audio", limits)
        out = checked(await handle.classify.remote(wav, req.top_k), "audio")
        return ClassifyResponse(
            labels=[LabelScore(label=lab, probability=p) for lab, p in out],
            duration_s=wav.size / limits.sample_rate,
        )


ROUTES = ClassifyRoutes  # found by serve.app.declared

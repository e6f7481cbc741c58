"""The routes of the older mode-based speaker servers, so that their clients work unchanged.

Those servers keep galleries called modes (``all`` plus named groups) with one active mode, and
their clients post raw 16 kHz float samples as JSON. Here a mode is a group of the enrollment
database (``all``: every enrolled speaker) or ``custom``, a gallery uploaded as labels and
embeddings; the active mode persists in the database (``serve/store/legacy.py``). The same
authentication as every route applies. Routes (all ``POST``, with the bodies and answers those
clients expect):

- ``/InitSpeakerFeats``: active mode back to ``all`` -> ``{"label", "feats_mode"}``;
- ``/speaker`` ``{"speaker": [float samples at 16 kHz]}`` -> the closest speaker of the active
  gallery, ``{"name", "label", "score"}`` (``score``: two decimals as a string, as those servers
  answered; cosine, or AS-norm when the model has a cohort);
- ``/GetSpeakerList`` -> ``{"label": [...], "feats": [[...], ...], "feats_mode"}`` (feats: the
  unit-length centroids, or the custom gallery's rows as uploaded);
- ``/ModifyFeatsMode`` ``{"feats_mode": mode}`` -> ``{"label", "feats_mode"}``;
- ``/ModifyFeatsCustom`` ``{"label": [...], "feats": [[...], ...]}`` -> the custom gallery, now
  active: ``{"label", "feats_mode": "custom"}``.

Errors are the app's ``{"error": {"code", "message"}}``: an unknown mode 404 ``unknown_group``,
an empty gallery 409 ``empty_gallery``, samples beyond ``max_seconds`` 400 ``audio_too_long``
(counted before any array is built; the body cap ``max_request_mb`` bounds the JSON first).
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import asyncio
import logging

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from models.waveform import mono_float32, resample
from serve import schemas as S
from serve.context import ServeContext
from serve.errors import ERRORS, ServiceError, request_body
from serve.http import app
from serve.routes.speaker import embedding_vector, store_model_id
from serve.store.legacy import CUSTOM, Gallery, LegacyModes

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the rate those clients send


class LegacySpeakerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: list[float] = Field(min_length=1)  # mono samples in [-1, 1] at 16 kHz


class FeatsModeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feats_mode: str = Field(min_length=1, max_length=200)  # "all", a group, or "custom"


class FeatsCustomRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: list[str] = Field(min_length=1)
    feats: list[list[float]] = Field(min_length=1)  # one embedding of the active model per label


class LegacySpeakerResponse(BaseModel):
    name: str  # the closest speaker's label (the older servers' key)
    label: str  # the same label
    score: str  # its score with two decimals, as a string (as the older servers answered)


class ModeResponse(BaseModel):
    label: list[str]
    feats_mode: str


class SpeakerListResponse(ModeResponse):
    feats: list[list[float]]


def _mode_response(g: Gallery) -> ModeResponse:
    return ModeResponse(label=g.labels, feats_mode=g.mode)


def legacy_samples(values: list[float], max_seconds: float, min_seconds: float) -> np.ndarray:
    """The older clients' ``speaker`` list (16 kHz) -> ``(T,)`` float32, its length checked
    against the limits before the array is built."""
    seconds = len(values) / SAMPLE_RATE
    if seconds > max_seconds:
        raise ServiceError(
            400,
            "audio_too_long",
            f"speaker: {len(values)} samples are {seconds:.1f} s at 16 kHz, longer than "
            f"max_seconds={max_seconds:g}; send a shorter clip",
        )
    if seconds < min_seconds:
        raise ServiceError(
            400,
            "audio_too_short",
            f"speaker: {len(values)} samples are {seconds:.2f} s at 16 kHz, shorter than "
            f"min_seconds={min_seconds:g}",
        )
    return mono_float32(np.asarray(values, dtype=np.float32), SAMPLE_RATE).numpy()


class LegacyRoutes:
    """The mode-based speaker routes; state is ``self.ctx`` and the database's mode tables."""

    ctx: ServeContext

    def _modes(self) -> LegacyModes:
        modes = getattr(self, "_legacy_modes", None)
        if modes is None or modes.store is not self.ctx.store:
            modes = self._legacy_modes = LegacyModes(self.ctx.store)
        return modes

    @app.post("/InitSpeakerFeats", response_model=ModeResponse, tags=["legacy"])
    async def legacy_init(self) -> ModeResponse:
        """Reset the active gallery to mode ``all`` (every enrolled speaker)."""
        return _mode_response(self._modes().reset())

    @app.post(
        "/speaker",
        response_model=LegacySpeakerResponse,
        responses={**ERRORS, "409": {"model": S.ErrorResponse}},
        openapi_extra=request_body(LegacySpeakerRequest),
        tags=["legacy"],
    )
    async def legacy_speaker(self, request: Request) -> LegacySpeakerResponse:
        """Raw 16 kHz samples -> the closest speaker of the active gallery and its score."""
        req = await self.ctx.parse(request, LegacySpeakerRequest, samples_body=True)
        limits = await self.ctx.speaker_limits()
        wav = legacy_samples(req.speaker, limits.max_seconds, limits.min_seconds)
        del req  # the list of Python floats is the larger copy
        if limits.sample_rate != SAMPLE_RATE:
            wav = await asyncio.to_thread(resample, wav, SAMPLE_RATE, limits.sample_rate)
        modes = self._modes()
        gallery = modes.gallery()
        if gallery.mode != CUSTOM:
            await store_model_id(self.ctx)  # 409 when the database holds another model's
        if not gallery.labels:
            raise ServiceError(
                409,
                "empty_gallery",
                f"mode {gallery.mode!r} has no speakers; enroll some (POST /speakers), or "
                "switch mode (POST /ModifyFeatsMode)",
            )
        emb = (await self.ctx.embedding.embed([wav], ["speaker"]))[0]
        if emb.shape[0] != gallery.matrix.shape[1]:
            raise ServiceError(
                409,
                "wrong_dimension",
                f"mode {gallery.mode!r} holds {gallery.matrix.shape[1]}-dim feats; the active "
                f"model's embeddings have {emb.shape[0]}: upload feats of this model",
            )
        scores = (await self.ctx.gallery_scorer())(emb[None], gallery.matrix)[0]  # (N,)
        best = int(np.argmax(scores))
        label = gallery.labels[best]
        return LegacySpeakerResponse(name=label, label=label, score=f"{float(scores[best]):.2f}")

    @app.post(
        "/GetSpeakerList",
        response_model=SpeakerListResponse,
        responses=ERRORS,
        tags=["legacy"],
    )
    async def legacy_speaker_list(self) -> SpeakerListResponse:
        """The active mode, its labels and their feats."""
        g = self._modes().gallery()
        return SpeakerListResponse(label=g.labels, feats=g.matrix.tolist(), feats_mode=g.mode)

    @app.post(
        "/ModifyFeatsMode",
        response_model=ModeResponse,
        responses=ERRORS,
        openapi_extra=request_body(FeatsModeRequest),
        tags=["legacy"],
    )
    async def legacy_modify_mode(self, request: Request) -> ModeResponse:
        """Switch the active gallery: ``all``, an enrollment group, or ``custom``."""
        req = await self.ctx.parse(request, FeatsModeRequest)
        return _mode_response(self._modes().set_mode(req.feats_mode))

    @app.post(
        "/ModifyFeatsCustom",
        response_model=ModeResponse,
        responses=ERRORS,
        openapi_extra=request_body(FeatsCustomRequest),
        tags=["legacy"],
    )
    async def legacy_modify_custom(self, request: Request) -> ModeResponse:
        """Make (and activate) the custom gallery from labels and embeddings of the active model."""
        req = await self.ctx.parse(request, FeatsCustomRequest)
        limit = self.ctx.args.max_import_files
        if len(req.label) > limit or len(req.feats) > limit:
            raise ServiceError(
                413, "too_many_speakers", f"{len(req.feats)} feats; at most {limit} per gallery"
            )
        if len(req.label) != len(req.feats):
            raise ServiceError(
                422,
                "invalid_request",
                f"{len(req.label)} labels for {len(req.feats)} feats; give one label per row",
            )
        dim = int((await self.ctx.embedding.info())["embed_dim"])
        x = np.stack([embedding_vector(f, dim, f"feats[{i}]") for i, f in enumerate(req.feats)])
        return _mode_response(self._modes().set_custom(req.label, x))


ROUTES = LegacyRoutes  # found by serve.app.declared

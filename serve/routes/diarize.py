"""``POST /diarize`` of the ingress: who spoke when, optionally named from an enrollment group.

A route module of the ingress (``serve/app.py``; shared state in ``self.ctx``,
``serve/context.py``). The audio is decoded here (JSON base64/path or
multipart, as for the speaker routes) with the diarization length limit
(``diarization.max_seconds``); the ``Diarization`` deployment (``serve/deployments/diarize.py``)
runs VAD, window embeddings (through the embedding deployment) and clustering. With ``group``,
the clusters are named against the enrolled speakers of that group (open set: one-to-one
Hungarian assignment, ``models.pipelines.diarize.name_clusters``; a cluster whose best match is
below ``diarization.name_threshold`` keeps its ``SPEAKER_xx`` label).
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import asyncio
import logging

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.pipelines.diarize import name_clusters
from models.pipelines.scoring import centroid
from serve import schemas as S
from serve.context import ServeContext
from serve.errors import ERRORS, ServiceError, request_body
from serve.http import app

log = logging.getLogger(__name__)


class DiarizeRequest(BaseModel):
    """One recording; speaker-count hints; ``group`` to name clusters after enrolled speakers."""

    model_config = ConfigDict(extra="forbid")

    audio: S.AudioSource
    num_speakers: int | None = Field(None, ge=1, le=64)  # exact count when known
    min_speakers: int | None = Field(None, ge=1, le=64)
    max_speakers: int | None = Field(None, ge=1, le=64)
    group: str | None = Field(None, min_length=1, max_length=200)  # enrollment group to name from
    rttm: bool = False  # also return the RTTM text
    return_embeddings: bool = False  # also return each speaker's centroid embedding
    uri: str = Field("audio", min_length=1, max_length=200, pattern=r"^\S+$")  # RTTM file id

    @model_validator(mode="after")
    def _bounds(self) -> "DiarizeRequest":
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers must be <= max_speakers")
        return self


class DiarizedSegment(BaseModel):
    start: float  # seconds
    end: float  # seconds
    speaker: str


class DiarizeResponse(BaseModel):
    segments: list[DiarizedSegment]
    speakers: list[str]  # labels in order of first appearance
    num_speakers: int
    duration: float  # seconds of audio
    timings: dict[str, float]  # seconds: vad, embedding, clustering (in the deployment), total
    named: dict[str, str] = Field(default_factory=dict)  # SPEAKER_xx -> enrolled name (group)
    group: str | None = None
    model_id: str
    rttm: str | None = None
    embeddings: dict[str, list[float]] | None = None  # speaker -> centroid (return_embeddings)


def _gallery(ctx: ServeContext, group: str, model_id: str) -> dict[str, np.ndarray]:
    """``{name: centroid (D,)}`` of the group's speakers (duplicate names get an id suffix)."""
    store = ctx.store
    if not any(g.get("name") == group for g in store.list_groups()):
        raise ServiceError(404, "unknown_group", f"no group {group!r}; GET /groups lists them")
    held = store.model_id
    if held is not None and held != model_id:
        raise ServiceError(
            409,
            "model_mismatch",
            f"group {group!r} holds embeddings of model {held}, not of the active model "
            f"{model_id}; switch models (POST /config) or re-enroll",
        )
    gallery: dict[str, np.ndarray] = {}
    for sp in store.list_speakers(group):
        key = sp.name if sp.name not in gallery else f"{sp.name} ({sp.id[:8]})"
        gallery[key] = centroid(store.embeddings(sp.id))
    return gallery


def _eer_threshold(info: dict) -> float | None:
    """The model's calibrated cosine EER threshold (``EmbeddingModel.info``), if any."""
    cal = info.get("calibration") or {}
    return cal["none"]["thresholds"]["eer"] if "none" in cal else None


class DiarizeRoutes:
    """``POST /diarize`` on the ``diarization`` product; state is ``self.ctx``."""

    ctx: ServeContext

    @app.post(
        "/diarize",
        response_model=DiarizeResponse,
        responses=ERRORS,
        openapi_extra=request_body(DiarizeRequest, {"audio": False}),
    )
    async def diarize(self, request: Request) -> DiarizeResponse:
        """One recording -> speaker turns ``[{start, end, speaker}]`` (+ names with ``group``)."""
        handle = self.ctx.handle("diarization")
        t0 = asyncio.get_running_loop().time()
        req = await self.ctx.parse(request, DiarizeRequest)
        info = await self.ctx.embedding.info()
        gallery = _gallery(self.ctx, req.group, info["model_id"]) if req.group else None
        d = self.ctx.args.diarization
        limits = self.ctx.audio_limits(
            info["sample_rate"],
            self.ctx.args.min_seconds,
            d.max_seconds,
            d.max_request_audio_seconds,
        )
        wav = await self.ctx.load(req.audio, "audio", limits)
        try:
            res = await handle.diarize.remote(
                wav,
                limits.sample_rate,
                self.ctx.embedding.active,
                int(info["embed_dim"]),
                req.num_speakers,
                req.min_speakers,
                req.max_speakers,
                _eer_threshold(info),
            )
        except Exception as exc:  # Ray wraps the replica's error; a ValueError is the input's
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, ValueError):
                raise ServiceError(400, "diarization_failed", f"audio: {cause}") from exc
            raise
        named: dict[str, str] = {}
        if gallery:
            mapping = name_clusters(
                res.cluster_centroids, gallery, self.ctx.args.diarization.name_threshold
            )
            named = {res.cluster_labels[k]: n for k, n in mapping.items() if n is not None}
            res = res.with_names(mapping)
        timings = dict(res.timings)
        timings["total"] = asyncio.get_running_loop().time() - t0
        return DiarizeResponse(
            segments=[
                DiarizedSegment(start=s.start, end=s.end, speaker=s.speaker) for s in res.segments
            ],  # fmt: skip
            speakers=list(res.cluster_labels),
            num_speakers=res.num_speakers,
            duration=res.duration,
            timings=timings,
            named=named,
            group=req.group,
            model_id=info["model_id"],
            rttm=res.to_rttm(req.uri) if req.rttm else None,
            embeddings=(
                {
                    lab: res.cluster_centroids[k].tolist()
                    for k, lab in enumerate(res.cluster_labels)
                }  # fmt: skip
                if req.return_embeddings
                else None
            ),
        )


ROUTES = DiarizeRoutes  # found by serve.app.declared

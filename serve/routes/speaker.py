"""Speaker routes of the ingress: verification, embeddings, enrollment, identification.

A route module (``serve/app.py`` composes it into the ingress; ``self.ctx`` is the shared
``serve/context.py`` context). It decodes audio (``serve/audio_input.py``), sends waveforms to
``EmbeddingModel`` (``serve/deployments/speaker.py``, dynamically batched, autoscaled) through
``ctx.embedding``, scores with ``models.pipelines.scoring``, and keeps enrollments in
``ctx.store`` (``serve/store``). The database is one SQLite file, so the ingress runs as one
replica per file; the model scales out.

Every refused request is a 4xx ``{"error": {"code", "message"}}`` (``serve/errors.py``, which also
documents the hand-parsed bodies). OpenAPI docs: ``/docs``.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import asyncio
import logging
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from datasets.audio import AudioBudget
from datasets.manifests import ManifestError, WalkLimits, scan_tree
from serve import schemas as S
from serve.audio_input import read_allowed_file, resolve_allowed_path
from serve.auth import audit
from serve.context import ServeContext
from serve.errors import ERRORS, ServiceError, request_body
from serve.http import app
from serve.store import ModelMismatchError, UnknownGroupError

log = logging.getLogger(__name__)

IMPORT_WALK_SECONDS = 30.0  # listing an import folder stops with 413 after this long

# ---------------------------------------------------------------------------------------------
# Helpers


def _speaker_out(sp: Any) -> S.SpeakerOut:
    d = asdict(sp)
    d["groups"] = list(d["groups"])
    return S.SpeakerOut(**d)


def embedding_vector(values: list[float], dim: int, field: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    if v.shape != (dim,):
        raise ServiceError(
            422,
            "wrong_dimension",
            f"{field} has {v.size} values but the active model's embeddings have {dim}",
        )
    if not np.isfinite(v).all() or not np.any(v):
        raise ServiceError(422, "invalid_embedding", f"{field} must be finite and non-zero")
    return v


async def _threshold(ctx: ServeContext, requested: float | None) -> float:
    """The request's threshold, else the app's operating point (``ServeContext.operating_point``:
    ``POST /config`` or ``AppArgs.threshold``, else the model's calibration record)."""
    return (await ctx.operating_point())[0] if requested is None else requested


def _import_response(
    group: str, source: str, speakers: list[Any], skipped: list[S.SkippedFile] | None = None
) -> S.ImportResponse:
    return S.ImportResponse(
        group=group,
        source=source,
        num_speakers=len(speakers),
        speakers=[_speaker_out(s) for s in speakers],
        skipped=skipped or [],
    )


def _store_mismatch(ctx: ServeContext, model_id: str) -> str | None:
    """What is wrong when the store holds speakers of another model than ``model_id`` (O(1))."""
    held = ctx.store.model_id
    if held is not None and held != model_id and ctx.store.num_speakers:
        return (
            f"the enrollment database holds embeddings of model {held}, not of the active "
            f"model {model_id}"
        )
    return None


async def _check_store_model(ctx: ServeContext, model_id: str) -> None:
    """409 when the store holds speakers embedded by another model than ``model_id``."""
    held = ctx.store.model_id
    if _store_mismatch(ctx, model_id) is not None:
        raise ModelMismatchError(
            f"the enrollment database {ctx.args.db} holds embeddings of model {held}, "
            f"not of the active model {model_id}; switch back (POST /config) or use "
            f"another db"
        )


async def store_model_id(ctx: ServeContext, model: str | None = None) -> str:
    """The id of ``model`` (default: the active model), once the store is known to hold its
    embeddings (or none): what every route that writes to or searches the store checks first
    (409 otherwise). Writes check it again in their transaction (``SpeakerStore._bind``)."""
    await ctx.sync_active_model()
    model_id = (await ctx.embedding.info(model))["model_id"]
    await _check_store_model(ctx, model_id)
    return model_id


def _who(request: Request) -> str | None:
    """The name of the API key that made ``request`` (``serve/http.py``'s ``authorize``)."""
    return getattr(request.state, "key_name", None)


def check_group(ctx: ServeContext, group: str) -> None:
    """``UnknownGroupError`` (404) unless the store has ``group``."""
    if not any(g.get("name") == group for g in ctx.store.list_groups()):
        raise UnknownGroupError(f"no group {group!r}; GET /groups lists them")


class SpeakerRoutes:
    """Verification, embeddings, enrollment, identification; state is ``self.ctx``."""

    ctx: ServeContext

    # -- health and config -------------------------------------------------------------------
    @app.get("/health", response_model=S.HealthResponse, responses={"503": {}})
    async def health(self) -> Any:
        """O(1) in the number of speakers; pings the embedding model (``health_timeout_s``):
        503 ``unavailable`` when it does not answer, ``degraded`` when routes would refuse."""
        ctx = self.ctx
        dead = await ctx.embedding.ping(ctx.args.health_timeout_s)
        if dead is None and not ctx.synced:
            try:
                await asyncio.wait_for(ctx.sync_active_model(), ctx.args.health_timeout_s)
            except (TimeoutError, ServiceError) as exc:
                dead = f"the embedding model deployment did not return its info ({exc!r})"
        if dead is not None:
            log.warning("/health: %s", dead)
            body = {"status": "unavailable", "problems": [dead], "model": ctx.embedding.active}
            return JSONResponse(body, status_code=503)
        info = await ctx.embedding.info()
        thr, source = await ctx.operating_point()
        mismatch = _store_mismatch(ctx, info["model_id"])
        problems = [] if mismatch is None else [f"{mismatch}: /identify and enrollment answer 409"]
        return S.HealthResponse(
            status="degraded" if problems else "ok",
            problems=problems,
            model=ctx.embedding.active,
            model_id=info["model_id"],
            num_speakers=ctx.store.num_speakers,
            threshold=thr,
            threshold_source=source,
            score_norm=info.get("score_norm", "none"),
        )

    async def _config(self) -> S.ConfigResponse:
        models = await self.ctx.embedding.models()
        thr, source = await self.ctx.operating_point()
        return S.ConfigResponse(
            threshold=thr,
            threshold_source=source,
            score_norm=models[self.ctx.embedding.active].get("score_norm", "none"),
            top_k=self.ctx.top_k,
            model=S.ModelInfo(**models[self.ctx.embedding.active]),
            models=[S.ModelInfo(**m) for m in models.values()],
            min_seconds=self.ctx.args.min_seconds,
            max_seconds=self.ctx.args.max_seconds,
            max_request_mb=self.ctx.args.max_request_mb,
        )

    @app.get("/config", response_model=S.ConfigResponse)
    async def get_config(self) -> S.ConfigResponse:
        return await self._config()

    @app.post(
        "/config",
        response_model=S.ConfigResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.ConfigUpdate),
    )
    async def set_config(self, request: Request) -> S.ConfigResponse:
        """Set the threshold and/or switch the active model to another configured one."""
        req = await self.ctx.parse(request, S.ConfigUpdate)
        models = await self.ctx.embedding.models()
        if req.model is not None:
            if req.model not in models:
                raise ServiceError(
                    422, "unknown_model", f"model {req.model!r} is not one of {sorted(models)}"
                )
        old_model, old_threshold = self.ctx.embedding.active, self.ctx.threshold
        await self.ctx.update_config(threshold=req.threshold, model=req.model)
        if req.model is not None:
            audit(_who(request), "set model", old=old_model, new=req.model)
        if req.threshold is not None:
            audit(_who(request), "set threshold", old=old_threshold, new=req.threshold)
        return await self._config()

    # -- verification and embeddings ---------------------------------------------------------
    @app.post(
        "/verify",
        response_model=S.VerifyResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.VerifyRequest, {"audio_a": False, "audio_b": False}),
    )
    async def verify(self, request: Request) -> S.VerifyResponse:
        """Two clips -> cosine score and same/different at the threshold."""
        req = await self.ctx.parse(request, S.VerifyRequest)
        emb = await self.ctx.embed_sources([req.audio_a, req.audio_b], ["audio_a", "audio_b"])
        thr = await _threshold(self.ctx, req.threshold)
        score = float((await self.ctx.score_pairs(emb[:1], emb[1:2]))[0])
        info = await self.ctx.embedding.info()
        return S.VerifyResponse(
            score=score, same=score >= thr, threshold=thr, model_id=info["model_id"]
        )

    @app.post(
        "/verify_batch",
        response_model=S.VerifyBatchResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.VerifyBatchRequest, {"reference": False, "candidates": True}),
    )
    async def verify_batch(self, request: Request) -> S.VerifyBatchResponse:
        """One reference clip against many candidates."""
        req = await self.ctx.parse(request, S.VerifyBatchRequest)
        if len(req.candidates) > self.ctx.args.max_candidates:
            raise ServiceError(
                413,
                "too_many_candidates",
                f"{len(req.candidates)} candidates; at most {self.ctx.args.max_candidates} per request",
            )
        fields = ["reference"] + [f"candidates[{i}]" for i in range(len(req.candidates))]
        emb = await self.ctx.embed_sources([req.reference, *req.candidates], fields)
        thr = await _threshold(self.ctx, req.threshold)
        ref = np.repeat(emb[:1], len(emb) - 1, axis=0)  # (N, D)
        scores = [float(s) for s in await self.ctx.score_pairs(ref, emb[1:])]
        info = await self.ctx.embedding.info()
        return S.VerifyBatchResponse(
            results=[
                S.CandidateScore(index=i, score=s, same=s >= thr) for i, s in enumerate(scores)
            ],
            threshold=thr,
            model_id=info["model_id"],
        )

    @app.post(
        "/extract_embedding",
        response_model=S.EmbeddingResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.ExtractRequest, {"audio": False}),
    )
    async def extract_embedding(self, request: Request) -> S.EmbeddingResponse:
        req = await self.ctx.parse(request, S.ExtractRequest)
        limits = await self.ctx.speaker_limits()
        wav = await self.ctx.load(req.audio, "audio", limits)
        emb = (await self.ctx.embedding.embed([wav], ["audio"]))[0]
        info = await self.ctx.embedding.info()
        return S.EmbeddingResponse(
            embedding=emb.tolist(),
            embed_dim=int(emb.size),
            model_id=info["model_id"],
            duration_s=wav.size / limits.sample_rate,
        )

    @app.post(
        "/compare_embeddings",
        response_model=S.CompareResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.CompareEmbeddingsRequest),
    )
    async def compare_embeddings(self, request: Request) -> S.CompareResponse:
        """Cosine of two embedding vectors of the active model's dimension."""
        req = await self.ctx.parse(request, S.CompareEmbeddingsRequest)
        dim = int((await self.ctx.embedding.info())["embed_dim"])
        a = embedding_vector(req.embedding_a, dim, "embedding_a")
        b = embedding_vector(req.embedding_b, dim, "embedding_b")
        thr = await _threshold(self.ctx, req.threshold)
        score = float((await self.ctx.score_pairs(a[None], b[None]))[0])
        return S.CompareResponse(score=score, same=score >= thr, threshold=thr)

    # -- enrollment and identification -------------------------------------------------------
    @app.post(
        "/speakers",
        response_model=S.SpeakerOut,
        responses={**ERRORS, "409": {"model": S.ErrorResponse}},
        openapi_extra=request_body(S.EnrollRequest, {"audio": True}),
    )
    async def enroll(self, request: Request) -> S.SpeakerOut:
        """Enroll a speaker from one or more clips (or re-enroll ``speaker_id``)."""
        req = await self.ctx.parse(request, S.EnrollRequest)
        if len(req.audio) > self.ctx.args.max_candidates:
            raise ServiceError(
                413,
                "too_many_audios",
                f"{len(req.audio)} clips; at most {self.ctx.args.max_candidates}",
            )
        name, groups = req.name, tuple(req.groups or ("default",))
        if req.speaker_id is not None:  # re-enrollment: 404 before any decoding
            old = self.ctx.store.get(req.speaker_id)
            name, groups = old.name, tuple(req.groups or old.groups)
        model = self.ctx.embedding.active  # read once: the store checks it at the commit
        model_id = await store_model_id(self.ctx, model)
        emb = await self.ctx.embed_sources(
            req.audio, [f"audio[{i}]" for i in range(len(req.audio))], model
        )
        sp = self.ctx.store.enroll(
            name,
            emb,
            groups=groups,
            model_id=model_id,
            metadata=req.metadata,
            speaker_id=req.speaker_id,
        )
        return _speaker_out(sp)

    @app.get("/speakers", response_model=S.SpeakerList, responses=ERRORS)
    async def list_speakers(self, group: str | None = None) -> S.SpeakerList:
        return S.SpeakerList(
            speakers=[_speaker_out(s) for s in self.ctx.store.list_speakers(group)]
        )

    @app.get("/speakers/{speaker_id}", response_model=S.SpeakerOut, responses=ERRORS)
    async def get_speaker(self, speaker_id: str) -> S.SpeakerOut:
        return _speaker_out(self.ctx.store.get(speaker_id))

    @app.delete("/speakers/{speaker_id}", response_model=S.DeleteResponse, responses=ERRORS)
    async def delete_speaker(self, speaker_id: str, request: Request) -> S.DeleteResponse:
        self.ctx.store.delete(speaker_id)
        audit(_who(request), "deleted speaker", speaker_id=speaker_id)
        return S.DeleteResponse(deleted=speaker_id)

    @app.post(
        "/speakers/{speaker_id}/groups",
        response_model=S.SpeakerOut,
        responses=ERRORS,
        openapi_extra=request_body(S.GroupRequest),
    )
    async def add_to_group(self, speaker_id: str, request: Request) -> S.SpeakerOut:
        req = await self.ctx.parse(request, S.GroupRequest)
        return _speaker_out(self.ctx.store.add_to_group(speaker_id, req.group))

    @app.delete(
        "/speakers/{speaker_id}/groups/{group}", response_model=S.SpeakerOut, responses=ERRORS
    )
    async def remove_from_group(self, speaker_id: str, group: str) -> S.SpeakerOut:
        return _speaker_out(self.ctx.store.remove_from_group(speaker_id, group))

    @app.get("/groups", response_model=S.GroupList)
    async def list_groups(self) -> S.GroupList:
        return S.GroupList(groups=self.ctx.store.list_groups())

    @app.post(
        "/identify",
        response_model=S.IdentifyResponse,
        responses={**ERRORS, "409": {"model": S.ErrorResponse}},
        openapi_extra=request_body(S.IdentifyRequest, {"audio": False}),
    )
    async def identify(self, request: Request) -> S.IdentifyResponse:
        """Top-k enrolled speakers for a clip; the first match is "unknown" below the threshold."""
        req = await self.ctx.parse(request, S.IdentifyRequest)
        if req.group is not None:
            check_group(self.ctx, req.group)
        model_id = await store_model_id(self.ctx)
        emb = await self.ctx.embed_sources([req.audio], ["audio"])
        thr = await _threshold(self.ctx, req.threshold)
        matches = self.ctx.store.identify(
            emb[0],
            group=req.group,
            top_k=req.top_k or self.ctx.top_k,
            threshold=thr,
            scorer=await self.ctx.gallery_scorer(),
        )
        return S.IdentifyResponse(
            matches=[S.MatchOut(**asdict(m)) for m in matches],
            threshold=thr,
            group=req.group,
            model_id=model_id,
        )

    # -- bulk enrollment ---------------------------------------------------------------------
    @app.post(
        "/speakers/import",
        response_model=S.ImportResponse,
        responses={**ERRORS, "403": {"model": S.ErrorResponse}},
        openapi_extra=request_body(S.ImportRequest),
    )
    async def import_speakers(self, request: Request) -> S.ImportResponse:
        """Enroll every speaker folder of a server-side tree, or a job's speakers.parquet."""
        req = await self.ctx.parse(request, S.ImportRequest)
        path = resolve_allowed_path(req.path, self.ctx.roots)
        audit(_who(request), "import", path=req.path, group=req.group)
        model = self.ctx.embedding.active
        model_id = await store_model_id(self.ctx, model)
        if path.is_file() and path.suffix == ".parquet":
            # read through the opened-descriptor check, bounded, off the event loop
            max_bytes = int(self.ctx.args.max_import_mb * 1e6)
            data = await asyncio.to_thread(
                read_allowed_file, req.path, self.ctx.roots, max_bytes, "path", "parquet file"
            )
            speakers = await asyncio.to_thread(
                self.ctx.store.import_speakers_parquet,
                data, group=req.group, model_id=model_id, name=req.path,
            )  # fmt: skip
            return _import_response(req.group, "parquet", speakers)
        if path.is_file():
            raise ServiceError(
                400,
                "invalid_import_path",
                f"{req.path}: import a speaker folder tree or a speakers.parquet file",
            )
        if not path.is_dir():
            raise ServiceError(404, "path_not_found", f"{req.path}: no such folder or file")
        return await self._import_tree(path, req, model, model_id)

    async def _import_tree(
        self, root: Path, req: S.ImportRequest, model: str, model_id: str
    ) -> S.ImportResponse:
        # Symlinks are not followed (not out of the roots, not round a loop), and the walk
        # stops past max_import_files files or IMPORT_WALK_SECONDS.
        limit = self.ctx.args.max_import_files
        walk = WalkLimits(follow_links=False, max_files=limit, max_seconds=IMPORT_WALK_SECONDS)
        try:
            utts = await asyncio.to_thread(scan_tree, root, req.layout, walk=walk)
        except ManifestError as exc:
            message = str(exc).replace(str(root), req.path)  # the client's path, not ours
            if "more than" in message or "took over" in message:
                raise ServiceError(
                    413, "too_many_files", f"{req.path}: {message} (at most {limit} per import)"
                ) from exc
            raise ServiceError(400, "invalid_tree", message) from exc
        by_speaker: dict[tuple[str, str], list[str]] = defaultdict(list)
        for u in utts:
            by_speaker[(u.dataset, u.speaker)].append(u.path)
        limits = await self.ctx.speaker_limits(model)
        sem = asyncio.Semaphore(32)
        skipped: list[S.SkippedFile] = []

        async def one(path: str) -> np.ndarray | None:
            shown = str(Path(req.path) / Path(path).relative_to(root))  # as the client names it
            async with sem:
                try:  # each file its own decoded-audio budget (an import is many requests' worth)
                    lim = replace(
                        limits, budget=AudioBudget(self.ctx.args.max_request_audio_seconds)
                    )
                    wav = await self.ctx.load(S.AudioSource(path=shown), shown, lim)
                    return (await self.ctx.embedding.embed([wav], [shown], model))[0]
                except ServiceError as exc:
                    skipped.append(S.SkippedFile(path=shown, error=exc.message))
                    return None

        enrolled = []
        for (dataset, speaker), paths in sorted(by_speaker.items()):
            rows = [r for r in await asyncio.gather(*(one(p) for p in paths)) if r is not None]
            if not rows:
                continue
            sp = self.ctx.store.enroll(
                speaker,
                np.stack(rows),
                groups=(req.group,),
                model_id=model_id,
                metadata={"dataset": dataset, "source": req.path, "num_files": len(paths)},
            )
            enrolled.append(sp)
        return _import_response(req.group, "tree", enrolled, skipped)

    @app.post(
        "/galleries",
        response_model=S.ImportResponse,
        responses=ERRORS,
        openapi_extra=request_body(S.GalleryRequest),
    )
    async def import_gallery(self, request: Request) -> S.ImportResponse:
        """A custom gallery: labels + embeddings (of the active model) into ``group``."""
        req = await self.ctx.parse(request, S.GalleryRequest)
        dim = int((await self.ctx.embedding.info())["embed_dim"])
        emb = np.stack(
            [embedding_vector(e, dim, f"embeddings[{i}]") for i, e in enumerate(req.embeddings)]
        )
        model_id = await store_model_id(
            self.ctx
        )  # bad vectors (422) outrank a model mismatch (409)
        speakers = self.ctx.store.import_gallery(
            req.labels, emb, group=req.group, model_id=model_id
        )
        audit(_who(request), "import gallery", group=req.group, speakers=len(req.labels))
        return _import_response(req.group, "gallery", speakers)


ROUTES = SpeakerRoutes  # found by serve.app.declared

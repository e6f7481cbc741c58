"""``ServeContext``: what the route modules of the ingress share, passed explicitly.

The routes of each product (``serve/routes/*.py``) are mixins of one ingress class
(``serve/app.py``), because Serve's ``@serve.ingress`` injects ``self`` into FastAPI methods.
They use nothing of the class that composes them except ``self.ctx``, one ``ServeContext``
built in the ingress ``__init__``: the app arguments, the enrollment store, the embedding
model (``EmbeddingClient``: handle, active model, model info), the handles of the optional
product deployments, request parsing and the audio limits (body size, allowed roots), and the
scoring rule: the operating point (``serve/thresholds.py``: an explicit threshold, else the
active model's calibration record, else 0.5) and AS-norm against the model's cohort.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request

from datasets.audio import AudioBudget, DecodeLimits
from datasets.cohort import load_cohort
from models.pipelines.scoring import asnorm_matrix, asnorm_pairs, cosine_pairs, score_centroids
from serve import schemas as S
from serve.audio_input import AudioLimits, load_source, parse_request
from serve.auth import ApiKey, Authorizer, KeyRing
from serve.deployments import EMBED_ATTEMPTS, EMBED_RETRY_BACKOFF_S
from serve.errors import ServiceError, checked
from serve.store import ModelMismatchError, SpeakerStore
from serve.thresholds import operating_point

log = logging.getLogger(__name__)


class EmbeddingClient:
    """The ``EmbeddingModel`` deployment as the routes see it: which model is active (switched
    by ``POST /config``), the models' info (fetched once), and batched embedding calls, each
    bounded by ``timeout_s`` and answered 503 with ``Retry-After`` when the deployment's queue
    is full (``max_queued_requests``) or the call times out."""

    def __init__(
        self, handle: DeploymentHandle, active: str, timeout_s: float = 30.0, retry_after_s: int = 1
    ) -> None:
        self.handle = handle
        self.active = active
        self.timeout_s = float(timeout_s)
        self.retry_after_s = int(retry_after_s)
        self._infos: dict[str, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    def _busy(self, message: str) -> ServiceError:
        return ServiceError(
            503, "overloaded", message, headers={"Retry-After": str(self.retry_after_s)}
        )

    async def _call(self, calls: Any) -> Any:
        """Await ``calls`` (handle responses gathered) within ``timeout_s``; overload -> 503."""
        try:
            return await asyncio.wait_for(calls, self.timeout_s)
        except BackPressureError as exc:
            raise self._busy("the embedding model's queue is full; retry later") from exc
        except (TimeoutError, DeploymentUnavailableError) as exc:
            log.warning("embedding model call failed: %r", exc)
            raise self._busy("the embedding model did not answer in time; retry later") from exc

    async def models(self) -> dict[str, dict[str, Any]]:
        """``name -> {name, model_id, embed_dim, sample_rate, backend, path}``."""
        if self._infos is None:
            async with self._lock:
                if self._infos is None:
                    self._infos = await self._call(self.handle.info.remote())
        return self._infos

    async def info(self, model: str | None = None) -> dict[str, Any]:
        """The info of ``model`` (default: the active model)."""
        return (await self.models())[model or self.active]

    async def ping(self, timeout_s: float) -> str | None:
        """None when a model replica answers within ``timeout_s`` (or the deployment is busy:
        its queue is full, so replicas are alive and working), else what went wrong."""
        try:
            await asyncio.wait_for(self.handle.ping.remote(), timeout_s)
        except BackPressureError:
            return None
        except TimeoutError:
            return f"the embedding model deployment did not answer a ping in {timeout_s:g} s"
        except Exception as exc:  # a dead or unavailable deployment, whatever Serve raises
            return f"the embedding model deployment is unavailable ({type(exc).__name__})"
        return None

    async def embed(
        self, wavs: list[np.ndarray], fields: list[str], model: str | None = None
    ) -> np.ndarray:
        """``N`` waveforms -> ``(N, D)`` from ``model`` (default: the active model; a route
        that records which model embedded passes the name it read once)."""
        name = model or self.active
        rows = await self._call(asyncio.gather(*(self._embed_one(w, name) for w in wavs)))
        return np.stack([checked(row, f) for row, f in zip(rows, fields, strict=True)]).astype(
            np.float32
        )

    async def _embed_one(self, wav: np.ndarray, model: str) -> np.ndarray | str:
        """One ``embed`` call, sent again if its replica died (``EMBED_ATTEMPTS`` in all)."""
        for attempt in range(1, EMBED_ATTEMPTS):
            try:
                return await self.handle.embed.remote(wav, model)
            except RayActorError as exc:
                log.warning("embedding replica died (attempt %d), retrying: %s", attempt, exc)
                await asyncio.sleep(EMBED_RETRY_BACKOFF_S * attempt)
        return await self.handle.embed.remote(wav, model)  # the last attempt raises


@dataclass
class ServeContext:
    """Shared state and helpers of every route module (one per ingress replica)."""

    args: S.AppArgs
    store: SpeakerStore
    embedding: EmbeddingClient
    handles: dict[str, DeploymentHandle]  # product key ("tse", "codec:<name>", ...) -> handle
    enable_with: dict[str, str]  # product key -> the argument that enables it (for the 404)
    roots: tuple[Path, ...]  # allowed server-side folders, symlinks resolved
    threshold: float | None  # explicit operating point (POST /config sets it); None: calibrated
    top_k: int  # identification's default top-k (POST /config or user_config)
    cohorts: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> (C, D) unit
    auth: Authorizer = field(default_factory=lambda: Authorizer(KeyRing(())))  # no keys: closed
    _infos: dict[str, Any] = field(default_factory=dict)
    synced: bool = False  # the active model's id is recorded in the store (sync_active_model)

    @classmethod
    def create(
        cls,
        model: DeploymentHandle,
        args: dict[str, Any],
        handles: dict[str, DeploymentHandle],
        enable_with: dict[str, str],
        keys: list[ApiKey] | None = None,
    ) -> ServeContext:
        """The context of one ingress replica: ``AppArgs`` defaults, then the configuration
        stored in the database (threshold, top_k, active model: the last ``POST /config`` or
        user_config), so a restart keeps what was set at run time. ``keys``: the API keys
        ``build_app`` loaded (none: every keyed route answers 401); ignored with
        ``auth: disabled``."""
        cfg = S.AppArgs.model_validate(args)
        store = SpeakerStore(cfg.db, max_metadata_bytes=cfg.max_metadata_bytes)
        saved = store.settings()
        active = saved.get("model", cfg.default_model)
        if active not in cfg.models:
            log.warning(
                "stored active model %r is not configured; using %r", active, cfg.default_model
            )
            active = cfg.default_model
        return cls(
            args=cfg,
            store=store,
            embedding=EmbeddingClient(model, active or "", cfg.model_timeout_s, cfg.retry_after_s),
            handles=dict(handles),
            enable_with=dict(enable_with),
            roots=tuple(Path(os.path.realpath(r)) for r in cfg.allowed_roots),
            threshold=saved.get("threshold", cfg.threshold),
            top_k=int(saved.get("top_k", cfg.top_k)),
            cohorts={n: load_cohort(m.cohort) for n, m in cfg.models.items() if m.cohort},
            auth=Authorizer(None if cfg.auth == "disabled" else KeyRing(keys or ())),
        )

    # -- configuration (durable: the database's settings table) --------------------------------
    def apply_user_config(self, user_config: dict[str, Any]) -> bool:
        """Serve's ``reconfigure``: apply ``user_config`` (``S.ServeUserConfig``) unless it is
        the one applied last (recorded in the database), so an unchanged user_config at a
        restart or redeploy never undoes a later ``POST /config``. Returns whether it applied."""
        uc = S.ServeUserConfig.model_validate(user_config or {}).model_dump()
        if self.store.settings().get("user_config") == uc:
            return False
        self.store.update_settings({**uc, "user_config": uc})
        self.threshold, self.top_k = uc["threshold"], uc["top_k"]
        log.info("user_config applied: threshold=%s top_k=%s", self.threshold, self.top_k)
        return True

    async def update_config(
        self, *, threshold: float | None = None, model: str | None = None
    ) -> None:
        """``POST /config``: switch the active model and/or set the threshold, durably. The
        switch is one store transaction with its binding check (``activate_model``)."""
        if model is not None:
            info = await self.embedding.info(model)
            await asyncio.to_thread(self.store.activate_model, model, info["model_id"])
            self.embedding.active = model
            self.synced = True
        if threshold is not None:
            await asyncio.to_thread(self.store.update_settings, {"threshold": threshold})
            self.threshold = threshold
        log.info("config changed: model=%s threshold=%s", model, threshold)

    async def sync_active_model(self) -> None:
        """Record the active model in the store (once the model ids are known) unless the store
        holds speakers of another model: enrollments then check it in their transaction."""
        if self.synced:
            return
        info = await self.embedding.info()
        if self.store.settings().get("model_id") != info["model_id"]:
            try:
                await asyncio.to_thread(
                    self.store.activate_model, self.embedding.active, info["model_id"]
                )
            except ModelMismatchError as exc:
                log.warning("%s", exc)  # /health reports it (degraded); routes answer 409
        self.synced = True

    # -- scoring -----------------------------------------------------------------------------
    async def operating_point(self) -> tuple[float, str]:
        """The active model's threshold and its source (:func:`operating_point`)."""
        info = await self.embedding.info()
        return operating_point(info, self.threshold, self.args.operating_point)

    async def _cohort(self) -> np.ndarray | None:
        cohort = self.cohorts.get(self.embedding.active)
        if cohort is not None:
            dim = int((await self.embedding.info())["embed_dim"])
            if cohort.shape[1] != dim:
                raise ServiceError(
                    409,
                    "cohort_mismatch",
                    f"the cohort of model {self.embedding.active!r} holds {cohort.shape[1]}-dim "
                    f"embeddings, the model's are {dim}-dim; extract the cohort with this model",
                )
        return cohort

    async def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Trials ``a[i]`` vs ``b[i]`` (``(N, D)``) -> ``(N,)`` scores: cosine, or AS-norm when
        the active model has a cohort (``AppArgs.asnorm_topk`` per side)."""
        cohort = await self._cohort()
        if cohort is None:
            return cosine_pairs(a, b)
        return asnorm_pairs(a, b, cohort, self.args.asnorm_topk)

    async def gallery_scorer(self) -> Any:
        """``(queries (B, D), unit gallery (G, D)) -> (B, G)`` scores for identification."""
        cohort = await self._cohort()
        if cohort is None:
            return score_centroids
        k = self.args.asnorm_topk
        return lambda q, g: asnorm_matrix(q, g, cohort, k)

    # -- product deployments -----------------------------------------------------------------
    def handle(self, key: str) -> DeploymentHandle:
        """The handle of an optional product deployment, or a 404 saying how to enable it."""
        handle = self.handles.get(key)
        if handle is None:
            raise self.disabled(key)
        return handle

    def disabled(self, key: str) -> ServiceError:
        """404 ``endpoint_disabled`` for product ``key`` (``"codec:<name>"`` -> ``codec``)."""
        product = key.partition(":")[0]
        return ServiceError(
            404,
            "endpoint_disabled",
            f"this app was started without {product}; enable it with "
            f"{self.enable_with.get(product, product)}",
        )

    async def product(self, key: str) -> tuple[DeploymentHandle, Any]:
        """The product's handle and its ``info()`` (sample rate, model id, ...), fetched once."""
        handle = self.handle(key)
        if key not in self._infos:
            self._infos[key] = await handle.info.remote()
        return handle, self._infos[key]

    # -- requests and audio ------------------------------------------------------------------
    async def parse(
        self,
        request: Request,
        model: type[S.BaseModel],
        max_files: int | None = None,
        samples_body: bool = False,
    ) -> Any:
        """The body as ``model``; ``max_files`` defaults to /verify_batch's reference +
        candidates, the most any route takes; ``samples_body``: :func:`parse_request`'s."""
        return await parse_request(
            request,
            model,
            max_bytes=self.args.max_request_bytes,
            max_files=self.args.max_candidates + 1 if max_files is None else max_files,
            max_json_bytes=int(self.args.max_json_kb * 1024),
            max_json_values=self.args.max_json_values,
            max_seconds=max(self.args.max_seconds, self.args.diarization.max_seconds),
            samples_body=samples_body,
        )

    def audio_limits(
        self,
        sample_rate: int,
        min_seconds: float,
        max_seconds: float,
        budget_seconds: float | None = None,
    ) -> AudioLimits:
        """Decoding limits of one request's audio: the app's body size, allowed roots, header
        bounds, and a fresh decoded-audio budget shared by the request's files
        (``budget_seconds`` channel-seconds, default ``max_request_audio_seconds``). Call it
        once per request."""
        return AudioLimits(
            sample_rate=int(sample_rate),
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            max_bytes=self.args.max_request_bytes,
            allowed_roots=self.roots,
            budget=AudioBudget(budget_seconds or self.args.max_request_audio_seconds),
            decode=DecodeLimits(self.args.max_sample_rate, self.args.max_channels),
        )

    def product_limits(self, info: dict[str, Any], min_seconds: float = 0.0) -> AudioLimits:
        """Limits of a product's audio field: its model's rate (``info`` from ``product``), up
        to the app's ``max_seconds``."""
        return self.audio_limits(info["sample_rate"], min_seconds, self.args.max_seconds)

    async def speaker_limits(self, model: str | None = None) -> AudioLimits:
        """Limits of a speaker clip: ``model``'s (default: the active model's) rate,
        ``min/max_seconds``."""
        info = await self.embedding.info(model)
        return self.audio_limits(info["sample_rate"], self.args.min_seconds, self.args.max_seconds)

    async def load(self, src: S.AudioSource, name: str, limits: AudioLimits) -> np.ndarray:
        """Decode one audio field off the event loop -> ``(T,)`` float32 at the limits' rate."""
        return await asyncio.to_thread(load_source, src, name, limits)

    async def embed_sources(
        self, sources: list[S.AudioSource], fields: list[str], model: str | None = None
    ) -> np.ndarray:
        """Decode and embed speaker clips -> ``(N, D)`` from ``model`` (default: active)."""
        limits = await self.speaker_limits(model)
        wavs = await asyncio.gather(
            *(self.load(s, f, limits) for s, f in zip(sources, fields, strict=True))
        )
        return await self.embedding.embed(list(wavs), fields, model)

"""Request/response models of the speaker routes and the typed arguments of the app builder.

``AppArgs`` (the whole app: the speaker service and every optional product) is what ``serve deploy serve/serve_config.yaml`` (``args:``) and
``python -m serve`` hand to :func:`serve.app.build_app`, validated strictly (unknown keys
raise), the shape of Ray's ``doc_code/app_builder.py`` typed builders.

Audio fields of a JSON request are :class:`AudioSource` objects (``{"base64": ...}`` or
``{"path": ...}``, or a bare base64 string); the same endpoints take ``multipart/form-data``
with files under the same field names (see ``serve/audio_input.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

# ---------------------------------------------------------------------------------------------
# App arguments


class ModelSpec(BaseModel):
    """One servable embedding model: a voxray checkpoint, or an exported ONNX file."""

    model_config = ConfigDict(extra="forbid")

    path: str
    # auto: torch on a GPU replica, ONNX Runtime on CPU (exported once beside the checkpoint;
    # torch where the exporter refuses the model); torch / onnx force one
    # (models/pipelines/placement.py)
    backend: Literal["auto", "torch", "onnx"] = "auto"
    # AS-norm cohort of this model (speakers.parquet of ray_jobs.extract, or .npy): verify and
    # identify scores are then AS-normalised (models.pipelines.scoring.as_norm)
    cohort: str | None = None


class AutoscalingArgs(BaseModel):
    """Ray Serve ``autoscaling_config`` of one deployment (embedding model, each product)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> AutoscalingArgs:
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.max_replicas must be >= min_replicas")
        return self

    def to_serve(self) -> dict[str, Any]:
        """Ray Serve's ``autoscaling_config``; at least one replica starts, so the first request
        never waits for a scale-up from zero."""
        return {
            "min_replicas": self.min_replicas,
            "initial_replicas": max(self.min_replicas, 1),
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


class ProductModelArgs(BaseModel):
    """One optional product model (``tse``, a codec, ``classify``): its own deployment."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str  # a voxray checkpoint of the product's family
    autoscaling: AutoscalingArgs = Field(default_factory=AutoscalingArgs)
    num_cpus: float = Field(1.0, ge=0.0)  # per replica (0 in tests)
    num_gpus: float = Field(0.0, ge=0.0)  # per replica; fractional shares a GPU; >0 runs on CUDA
    torch_threads: int = Field(1, ge=1)  # intra-op threads per replica
    max_batch_size: int = Field(8, ge=1)  # @serve.batch size where the deployment batches
    batch_wait_timeout_s: float = Field(0.01, ge=0.0)


class DiarizationArgs(BaseModel):
    """``POST /diarize``: VAD + the embedding deployment + clustering (no extra checkpoint)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_seconds: float = Field(3600.0, gt=0.0)  # longest recording /diarize accepts
    # decoded-audio budget of one /diarize request, in channel-seconds (a long-file route:
    # larger than AppArgs.max_request_audio_seconds; see the README's limits)
    max_request_audio_seconds: float = Field(7200.0, gt=0.0)
    # DiarizationConfig overrides by dotted key (e.g. {"clustering.threshold": 0.6}); the
    # values a Tune sweep found (tune.sweep diarization) go here.
    config: dict[str, Any] = Field(default_factory=dict)
    name_threshold: float = Field(0.5, ge=-1.0, le=1.0)  # cosine to name a cluster (groups)
    autoscaling: AutoscalingArgs = Field(default_factory=AutoscalingArgs)
    num_cpus: float = Field(0.5, ge=0.0)  # per diarization replica (VAD + clustering)


class ServeUserConfig(BaseModel):
    """The ingress's Serve ``user_config``: applied by ``reconfigure()`` without a restart.

    ``build_app`` sets it from ``AppArgs.threshold``/``top_k``; a ``deployments:`` entry of
    ``serve_config.yaml`` (name ``VoxrayService``) overrides it. The most recent change wins
    between it and ``POST /config``: the database records the last user_config applied, and a
    user_config equal to that one (a restart, a redeploy that did not change it) changes
    nothing, so it never undoes a later ``POST /config``.
    """

    model_config = ConfigDict(extra="forbid")

    threshold: float | None = Field(None, allow_inf_nan=False)  # None: calibrated
    top_k: int = Field(5, ge=1, le=100)


class AppArgs(BaseModel):
    """Arguments of ``build_app``. ``checkpoint`` is shorthand for ``models={"default": ...}``.

    An optional product is enabled by its field: a ``ProductModelArgs`` (one deployment) or a
    dict of them (one deployment each), which ``serve/deployments/<product>.py`` binds.
    """

    model_config = ConfigDict(extra="forbid")

    checkpoint: str | None = None  # a voxray checkpoint (.pt), or an .onnx file with backend onnx
    backend: Literal["auto", "torch", "onnx"] = "auto"  # backend of `checkpoint` (ModelSpec)
    models: dict[str, ModelSpec] = Field(default_factory=dict)  # name -> model; switch at runtime
    default_model: str | None = None  # the active model at start (default: the first one)
    db: str = "speakers.db"  # SQLite enrollment database (created if missing)
    # Operating point of verify + identify. None: the active model's calibration record
    # (<checkpoint>.calibration.json, models.calibration) at `operating_point`, for the score
    # normalisation in use; a number here (or --threshold) overrides it; with neither, 0.5
    # (cosine; refused when scores are AS-normalised).
    threshold: float | None = Field(None, allow_inf_nan=False)
    operating_point: Literal["eer", "min_dcf_0.01", "min_dcf_0.05"] = "eer"
    cohort: str | None = None  # AS-norm cohort of `checkpoint` (ModelSpec.cohort for `models`)
    asnorm_topk: int = Field(100, ge=1)  # cohort scores averaged per side
    top_k: int = Field(5, ge=1, le=100)
    min_seconds: float = Field(0.5, ge=0.0)  # audio shorter than this is refused (400)
    max_seconds: float = Field(60.0, gt=0.0)  # longer audio is refused from the header (400)
    max_request_mb: float = Field(25.0, gt=0.0)  # bodies above this get 413 before decoding
    # Decoding bounds, checked from each file's header before decoding (datasets.audio):
    max_sample_rate: int = Field(192_000, ge=8000)  # Hz; above: 400 sample_rate_too_high
    max_channels: int = Field(32, ge=1)  # above: 400 too_many_channels
    # decoded audio of all the files of one request, in channel-seconds (audio above 48 kHz
    # counts proportionally more); above: 413 audio_budget_exceeded. /diarize has its own.
    max_request_audio_seconds: float = Field(600.0, gt=0.0)
    max_candidates: int = Field(64, ge=1)  # /verify_batch candidates and audios per enrollment
    max_import_files: int = Field(5000, ge=1)  # /speakers/import of a folder tree
    # /speakers/import of a speakers.parquet (100k speakers of 192 dims is about 80 MB)
    max_import_mb: float = Field(256.0, gt=0.0)
    allowed_roots: list[str] = Field(default_factory=list)  # server-side paths must lie here
    # The HTTP edge (README "Security"): API keys (serve/auth.py), CORS, JSON body limits.
    api_keys_file: str | None = None  # {name: {hash, scopes}}; python -m serve.keys writes it
    auth: Literal["keys", "disabled"] = "keys"  # disabled: no keys, loopback only (development)
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed; none: off
    max_json_kb: float = Field(1024.0, gt=0.0)  # bodies of the JSON-only routes (no audio)
    # JSON values (numbers, strings, objects...) in the JSON body of an audio route, counted
    # before parsing: raw samples count one each (a 60 s clip at 16 kHz is 960000)
    max_json_values: int = Field(1_000_000, ge=1000)
    max_metadata_bytes: int = Field(4096, ge=2)  # JSON of a speaker's metadata (413 above)
    # Overload (README "Overload"): the ingress takes at most max_ongoing_requests at once and
    # queues max_queued_requests more; beyond that the proxy answers 503 with Retry-After. The
    # embedding deployment queues model_max_queued_requests calls beyond its replicas' slots;
    # beyond that, and for a call not answered in model_timeout_s, the route answers 503 with
    # Retry-After. /health pings the model with health_timeout_s.
    max_ongoing_requests: int = Field(128, ge=1)
    max_queued_requests: int = Field(128, ge=1)
    model_max_queued_requests: int = Field(64, ge=1)
    model_timeout_s: float = Field(30.0, gt=0.0)
    health_timeout_s: float = Field(2.0, gt=0.0)
    retry_after_s: int = Field(1, ge=1)
    # Embedding deployment: dynamic batching, autoscaling, resources.
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0)
    autoscaling: AutoscalingArgs = Field(default_factory=AutoscalingArgs)
    model_num_cpus: float = Field(1.0, ge=0.0)  # per embedding replica (0 in tests)
    model_num_gpus: float = Field(0.0, ge=0.0)  # per embedding replica; >0 runs torch on CUDA
    ingress_num_cpus: float = Field(0.5, ge=0.0)
    torch_threads: int = Field(1, ge=1)  # intra-op threads per embedding replica
    # Other products in the same app, each model its own autoscaled deployment.
    diarization: DiarizationArgs = Field(default_factory=DiarizationArgs)
    tse: ProductModelArgs | None = None  # POST /extract_target
    codecs: dict[str, ProductModelArgs] = Field(default_factory=dict)  # /codec/{encode,decode}
    # POST /classify; `classifier` is the old spelling of the key, still read
    classify: ProductModelArgs | None = Field(
        None, validation_alias=AliasChoices("classify", "classifier")
    )

    @model_validator(mode="after")
    def _models(self) -> AppArgs:
        if self.checkpoint is not None:
            if "default" in self.models:
                raise ValueError("give either checkpoint or models['default'], not both")
            self.models = {
                "default": ModelSpec(
                    path=self.checkpoint, backend=self.backend, cohort=self.cohort
                ),
                **self.models,
            }
        elif self.cohort is not None:
            raise ValueError("cohort applies to checkpoint; with models, set models[NAME].cohort")
        if not self.models:
            raise ValueError("no model: pass checkpoint=PATH or models={name: {path, backend}}")
        if self.default_model is None:
            self.default_model = next(iter(self.models))
        elif self.default_model not in self.models:
            raise ValueError(
                f"default_model {self.default_model!r} is not one of {sorted(self.models)}"
            )
        if self.min_seconds >= self.max_seconds:
            raise ValueError("min_seconds must be below max_seconds")
        return self

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)

    def product_models(self) -> dict[str, ProductModelArgs]:
        """Every configured product model, ``{"tse": ..., "codecs.<name>": ..., ...}``: the
        fields holding a ``ProductModelArgs`` or a dict of them."""
        out: dict[str, ProductModelArgs] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, ProductModelArgs):
                out[name] = value
            elif isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(item, ProductModelArgs):
                        out[f"{name}.{key}"] = item
        return out


# ---------------------------------------------------------------------------------------------
# Requests


class AudioSource(BaseModel):
    """Audio in a JSON body: ``{"base64": "<file bytes>"}``, ``{"path": "<server path>"}`` or
    raw samples ``{"samples": [floats in -1..1], "sample_rate": 16000}``.

    A bare string is read as base64 (a ``data:audio/...;base64,`` prefix is allowed). Paths
    are read only under the service's ``allowed_roots``. Raw samples are mono, at one of
    ``RAW_SAMPLE_RATES``, within the route's duration limits (``serve/audio_input.py``).
    """

    model_config = ConfigDict(extra="forbid")

    base64: str | None = None
    path: str | None = None
    samples: list[float] | None = None
    sample_rate: int | None = None  # of `samples` (required with them)
    _raw: bytes | None = PrivateAttr(None)  # a multipart upload's bytes

    @model_validator(mode="before")
    @classmethod
    def _bare_string(cls, value: Any) -> Any:
        return {"base64": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> AudioSource:
        given = [f for f in ("base64", "path", "samples") if getattr(self, f) is not None]
        if self._raw is None and len(given) != 1:
            raise ValueError("give exactly one of 'base64', 'path' or 'samples'")
        if (self.samples is None) != (self.sample_rate is None):
            raise ValueError("'sample_rate' goes with 'samples' (and only with them)")
        return self

    @classmethod
    def from_upload(cls, data: bytes) -> AudioSource:
        src = cls.model_construct(base64=None, path=None, samples=None, sample_rate=None)
        src._raw = data
        return src


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VerifyRequest(_Req):
    audio_a: AudioSource
    audio_b: AudioSource
    threshold: float | None = Field(None, allow_inf_nan=False)  # default: the service's


class VerifyBatchRequest(_Req):
    reference: AudioSource
    candidates: list[AudioSource] = Field(min_length=1)
    threshold: float | None = Field(None, allow_inf_nan=False)


class ExtractRequest(_Req):
    audio: AudioSource


class CompareEmbeddingsRequest(_Req):
    embedding_a: list[float] = Field(min_length=1)
    embedding_b: list[float] = Field(min_length=1)
    threshold: float | None = Field(None, allow_inf_nan=False)


class ConfigUpdate(_Req):
    threshold: float | None = Field(None, allow_inf_nan=False)
    model: str | None = None  # name of a configured model (GET /config lists them)


class EnrollRequest(_Req):
    """A new speaker (``name``; groups default to ``["default"]``), or with ``speaker_id`` a
    re-enrollment: the clips are added to that speaker's embeddings (name and groups kept,
    ``groups`` added, ``metadata`` merged)."""

    name: str | None = Field(None, min_length=1, max_length=200)
    audio: list[AudioSource] = Field(min_length=1)
    groups: list[str] | None = Field(None, min_length=1)
    speaker_id: str | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _name(self) -> EnrollRequest:
        if self.name is None and self.speaker_id is None:
            raise ValueError("name is required to enroll a new speaker")
        return self


class IdentifyRequest(_Req):
    audio: AudioSource
    group: str | None = None  # restrict to one gallery
    top_k: int | None = Field(None, ge=1, le=100)
    threshold: float | None = Field(None, allow_inf_nan=False)


class GroupRequest(_Req):
    group: str = Field(min_length=1, max_length=200)


class ImportRequest(_Req):
    """Bulk enrollment from a server-side folder tree or an extraction job's speakers.parquet."""

    path: str
    group: str = Field("default", min_length=1, max_length=200)
    layout: Literal["auto", "dataset/speaker/utt", "speaker/utt"] = "auto"  # for folder trees


class GalleryRequest(_Req):
    """A custom gallery: one label and one embedding (from the active model) per speaker."""

    group: str = Field(min_length=1, max_length=200)
    labels: list[str] = Field(min_length=1)
    embeddings: list[list[float]] = Field(min_length=1)

    @model_validator(mode="after")
    def _lengths(self) -> GalleryRequest:
        if len(self.labels) != len(self.embeddings):
            raise ValueError(
                f"{len(self.labels)} labels but {len(self.embeddings)} embeddings; "
                "give one embedding per label"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Responses


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None  # 5xx only: quote it; the server log has the details


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthResponse(BaseModel):
    # ok; degraded: answers, but some routes refuse (``problems`` says why, e.g. the database
    # holds another model's embeddings: /identify answers 409); unavailable (HTTP 503): the
    # embedding model deployment did not answer a ping within ``AppArgs.health_timeout_s``
    status: Literal["ok", "degraded", "unavailable"]
    problems: list[str] = Field(default_factory=list)
    model: str
    model_id: str
    num_speakers: int
    threshold: float
    threshold_source: str  # "config", "calibration: <file> (<norm>, <operating point>)", "default"
    score_norm: str  # "none" (cosine) or "asnorm"


class VerifyResponse(BaseModel):
    score: float
    same: bool
    threshold: float
    model_id: str


class CandidateScore(BaseModel):
    index: int
    score: float
    same: bool


class VerifyBatchResponse(BaseModel):
    results: list[CandidateScore]
    threshold: float
    model_id: str


class EmbeddingResponse(BaseModel):
    embedding: list[float]
    embed_dim: int
    model_id: str
    duration_s: float


class CompareResponse(BaseModel):
    score: float
    same: bool
    threshold: float


class ModelInfo(BaseModel):
    name: str
    model_id: str
    embed_dim: int
    sample_rate: int
    backend: str
    path: str
    calibration_file: str | None = None  # the model's calibration record, when it has one
    calibration: dict[str, Any] | None = None  # {norm: {thresholds, data, ...}}
    score_norm: str = "none"  # "asnorm" when the model has a cohort


class ConfigResponse(BaseModel):
    threshold: float
    threshold_source: str  # as in HealthResponse
    score_norm: str
    top_k: int
    model: ModelInfo
    models: list[ModelInfo]  # configured models; POST /config {"model": name} switches
    min_seconds: float
    max_seconds: float
    max_request_mb: float


class SpeakerOut(BaseModel):
    id: str
    name: str
    groups: list[str]
    num_embeddings: int
    model_id: str
    embed_dim: int
    created_at: float
    metadata: dict[str, Any]


class SpeakerList(BaseModel):
    speakers: list[SpeakerOut]


class MatchOut(BaseModel):
    speaker_id: str | None  # None: "unknown" (best score below the threshold)
    name: str
    score: float


class IdentifyResponse(BaseModel):
    matches: list[MatchOut]
    threshold: float
    group: str | None
    model_id: str


class GroupList(BaseModel):
    groups: list[dict[str, Any]]


class DeleteResponse(BaseModel):
    deleted: str


class SkippedFile(BaseModel):
    path: str
    error: str


class ImportResponse(BaseModel):
    group: str
    source: Literal["tree", "parquet", "gallery"]
    num_speakers: int
    speakers: list[SpeakerOut]
    skipped: list[SkippedFile] = Field(default_factory=list)

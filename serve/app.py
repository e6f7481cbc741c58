"""The voxray Serve application: one ingress over the model deployments of every product.

``build_app(args)`` is a typed Ray Serve app builder (the shape of Ray's
``doc/source/serve/doc_code/app_builder.py``): ``serve deploy serve/serve_config.yaml`` and
``python -m serve`` call it with :class:`serve.schemas.AppArgs` fields. The ingress
(``VoxrayService``) is the FastAPI app of ``serve/http.py`` with the route mixin of each
product (``serve/routes/<product>.py``), sharing one ``ServeContext`` (``serve/context.py``);
each model is its own deployment (``serve/deployments/<product>.py``: own replicas, own
autoscaling), reached through a ``DeploymentHandle``:

- speaker (``/verify``, ``/extract_embedding``, ``/speakers``, ``/identify``, ...):
  ``EmbeddingModel`` + the SQLite enrollment store (``serve/store``);
- diarize (``POST /diarize``): the ``Diarization`` deployment (VAD + clustering, window
  embeddings from ``EmbeddingModel``), enabled by ``diarization.enabled``;
- tse (``POST /extract_target``, target speaker extraction): ``TSEModel``, enabled by ``tse``;
- codec (``/codec/encode``, ``/codec/decode``): one ``CodecModel`` per entry of ``codecs``;
- classify (``POST /classify``): ``ClassifyModel`` (batched), enabled by ``classify``.

Products whose models are not configured answer 404 ``endpoint_disabled`` saying which
argument enables them. Adding a product: its deployment module (declaring ``PRODUCT``), its
route module (declaring ``ROUTES``, the mixin class) and its ``AppArgs`` field; both modules are
found by discovery, so this file does not change.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import importlib
import logging
import pkgutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import ray.cloudpickle
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig
from ray.serve.handle import DeploymentHandle

from models.hub import resolve_checkpoint
from serve import deployments, routes
from serve import schemas as S
from serve.auth import ENV_VAR, ApiKey, is_loopback, load_keys
from serve.context import ServeContext
from serve.deployments.speaker import bind_embedding
from serve.http import app
from serve.thresholds import check_calibration

log = logging.getLogger(__name__)


def declared(package: ModuleType, attr: str) -> tuple[Any, ...]:
    """``attr`` of every module of ``package`` that declares it, in module-name order.

    The registry of the ingress: ``serve/routes/<product>.py`` declares ``ROUTES`` (its mixin)
    and ``serve/deployments/<product>.py`` declares ``PRODUCT`` (its optional deployment), so a
    new product is found without an edit here. Importing a route module registers its routes
    on the FastAPI app of ``serve/http.py``.
    """
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, attr):
            found.append(getattr(module, attr))
    return tuple(found)


ROUTES: tuple[type, ...] = declared(routes, "ROUTES")
PRODUCTS: tuple[deployments.Product, ...] = declared(deployments, "PRODUCT")

# Serve ships the ingress class by value with the FastAPI app it rewrote (route methods get
# ``self`` injected through their ``__signature__``). Methods of a mixin that lives in another
# module would be pickled by reference and re-imported in the replica without that rewrite, so
# the route modules travel by value too.
for _routes in ROUTES:
    ray.cloudpickle.register_pickle_by_value(sys.modules[_routes.__module__])


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
@serve.ingress(app)
class VoxrayService(*ROUTES):
    """HTTP ingress: decoding and request handling; models live in their own deployments."""

    def __init__(
        self,
        model: DeploymentHandle,
        args: dict[str, Any],
        handles: dict[str, DeploymentHandle] | None = None,
        enable_with: dict[str, str] | None = None,
        keys: list[ApiKey] | None = None,
    ) -> None:
        self.ctx = ServeContext.create(model, args, handles or {}, enable_with or {}, keys)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's ``user_config`` (``S.ServeUserConfig``: threshold, top_k), applied in place
        (no restart) unless it is the one applied last (``ServeContext.apply_user_config``)."""
        self.ctx.apply_user_config(user_config)


def serve_http_host() -> str | None:
    """The host the running Serve HTTP proxy listens on; None when Serve is not running yet
    (``serve.run`` then starts it on Serve's default, 127.0.0.1)."""
    import ray
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():
        return None
    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else client.http_config.host


def api_keys(cfg: S.AppArgs) -> list[ApiKey] | None:
    """The app's API keys (``api_keys_file`` and ``$VOXRAY_API_KEYS``); None with ``auth:
    disabled``, which is refused unless Serve listens on loopback only. No keys at all is
    refused: a service holding voiceprints does not start open by accident."""
    if cfg.auth == "disabled":
        host = serve_http_host()
        if host is not None and not is_loopback(host):
            raise ValueError(
                f"auth: disabled, but Serve listens on {host}; keyless mode is for loopback "
                "(127.0.0.1) only: create keys (python -m serve.keys add) instead"
            )
        log.warning(
            "AUTHENTICATION IS DISABLED (auth: disabled): anyone who can reach this machine's "
            "loopback can enroll, delete and change the threshold; use API keys in production"
        )
        return None
    keys = load_keys(cfg.api_keys_file)
    if not keys:
        raise ValueError(
            f"no API keys: set api_keys_file (python -m serve.keys add admin --scopes admin "
            f"--file keys.json) or ${ENV_VAR}; for a loopback-only development service, "
            "auth: disabled"
        )
    return keys


def build_app(args: dict[str, Any]) -> Application:
    """``AppArgs`` (or its dict) -> the Serve application (ingress + model deployments).

    Validates the arguments here, in the driver, so a bad config fails at ``serve run`` /
    ``serve deploy`` time with a message instead of inside a replica.
    """
    cfg = args if isinstance(args, S.AppArgs) else S.AppArgs.model_validate(args)
    for name, spec in cfg.models.items():
        if not spec.path.endswith(".onnx"):
            # A file, or a published model by name: fetched and converted here, once, into the
            # cache, so a replica on this machine finds it there (another node resolves the
            # same name into its own cache).
            try:
                resolve_checkpoint(spec.path)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"model {name!r}: {exc}") from exc
        elif not Path(spec.path).is_file():
            raise FileNotFoundError(f"model {name!r}: no such file {spec.path}")
        check_calibration(name, spec, cfg.threshold)
    for root in cfg.allowed_roots:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"allowed_roots: {root} is not a folder")
    model = bind_embedding(cfg)
    handles: dict[str, Any] = {}
    for product in PRODUCTS:
        handles.update(product.applications(cfg, model))
    enable_with = {p.key: p.enable_with for p in PRODUCTS}
    keys = api_keys(cfg)
    ingress = VoxrayService.options(
        ray_actor_options={"num_cpus": cfg.ingress_num_cpus},
        user_config=S.ServeUserConfig(threshold=cfg.threshold, top_k=cfg.top_k).model_dump(),
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,  # beyond: the proxy answers 503
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s),
    )
    return ingress.bind(
        model,
        cfg.model_dump(mode="json", exclude={"checkpoint", "backend"}),
        handles,
        enable_with,
        keys,
    )

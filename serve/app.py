"""The voxray Serve application: one ingress over the model deployments of every product.

``build_app(args)`` is a typed Ray Serve app builder (the shape of Ray's
``doc/source/serve/doc_code/app_builder.py``): ``serve deploy serve/serve_config.yaml`` and
``python -m serve`` call it with :class:`serve.schemas.SpeakerAppArgs` fields. The ingress
(``VoxrayService``) is the FastAPI app of ``serve/http.py`` with the route mixins of each
product; each model is its own deployment (own replicas, own autoscaling), reached through a
``DeploymentHandle``:

- speaker routes (``serve/speaker_routes.py``): ``EmbeddingModel`` + the SQLite enrollment store;
- diarization (``serve/diarize_routes.py``): ``POST /diarize`` on the ``Diarization`` deployment
  (``serve/deployments_diarize.py``: VAD + clustering, window embeddings from ``EmbeddingModel``);
- codec and classifier routes (``serve/codec_routes.py``): ``/codec/encode``, ``/codec/decode``
  (one ``CodecModel`` per entry of ``codecs``) and ``/classify`` (``ClassifierModel``, batched),
  from ``serve/deployments_codec.py``;
- target speaker extraction (``serve/extract_routes.py``): ``POST /extract_target`` on the
  ``TSEModel`` deployment (``serve/deployments_tse.py``), enabled by ``tse``;

Products whose models are not configured answer 404 ``endpoint_disabled`` saying which
argument enables them.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import logging
from pathlib import Path
from typing import Any

import ray.cloudpickle
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from models.pipelines.diarize import diarization_config
from serve import codec_routes, diarize_routes, extract_routes, speaker_routes
from serve import schemas as S
from serve.audio_input import AudioLimits
from serve.codec_routes import CodecRoutes
from serve.deployments import EmbeddingModel
from serve.deployments_codec import ClassifierModel, CodecModel
from serve.deployments_diarize import Diarization
from serve.deployments_tse import TSEModel
from serve.diarize_routes import DiarizeRoutes
from serve.errors import ServiceError
from serve.extract_routes import ExtractRoutes
from serve.http import app
from serve.speaker_routes import SpeakerRoutes

log = logging.getLogger(__name__)

# Serve ships the ingress class by value with the FastAPI app it rewrote (route methods get
# ``self`` injected through their ``__signature__``). Methods of a mixin that lives in another
# module would be pickled by reference and re-imported in the replica without that rewrite, so
# the mixin modules travel by value too.
for _module in (diarize_routes, speaker_routes, codec_routes, extract_routes):
    ray.cloudpickle.register_pickle_by_value(_module)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
@serve.ingress(app)
class VoxrayService(SpeakerRoutes, CodecRoutes, DiarizeRoutes, ExtractRoutes):
    """HTTP ingress: decoding and request handling; models live in their own deployments."""

    def __init__(
        self,
        model: DeploymentHandle,
        args: dict[str, Any],
        products: dict[str, DeploymentHandle] | None = None,
    ) -> None:
        self._init_speaker(model, args)
        self.products = dict(products or {})
        self._product_infos: dict[str, Any] = {}

    async def product_info(self, name: str, enable_with: str) -> tuple[DeploymentHandle, Any]:
        """The product's handle and its ``info()`` (sample rate, model id, ...), fetched once."""
        handle = self.product(name, enable_with)
        if name not in self._product_infos:
            self._product_infos[name] = await handle.info.remote()
        return handle, self._product_infos[name]

    def audio_limits(self, sample_rate: int, min_seconds: float, max_seconds: float) -> AudioLimits:
        """Decoding limits of one audio field: the app's body size and allowed roots."""
        return AudioLimits(
            sample_rate=int(sample_rate),
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            max_bytes=self.args.max_request_bytes,
            allowed_roots=self.roots,
        )

    def product(self, name: str, enable_with: str) -> DeploymentHandle:
        """The handle of an optional product deployment, or a 404 saying how to enable it."""
        handle = self.products.get(name)
        if handle is None:
            raise ServiceError(
                404,
                "endpoint_disabled",
                f"this app was started without {name}; enable it with {enable_with}",
            )
        return handle


def build_app(args: dict[str, Any]) -> Application:
    """``SpeakerAppArgs`` (or its dict) -> the Serve application (ingress + embedding model).

    Validates the arguments here, in the driver, so a bad config fails at ``serve run`` /
    ``serve deploy`` time with a message instead of inside a replica.
    """
    cfg = args if isinstance(args, S.SpeakerAppArgs) else S.SpeakerAppArgs.model_validate(args)
    for name, spec in cfg.models.items():
        if not Path(spec.path).is_file():
            raise FileNotFoundError(f"model {name!r}: no such file {spec.path}")
    for root in cfg.allowed_roots:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"allowed_roots: {root} is not a folder")
    auto = cfg.autoscaling
    model = EmbeddingModel.options(
        autoscaling_config=auto.to_serve(),
        max_ongoing_requests=max(2 * cfg.max_batch_size, int(auto.target_ongoing_requests) + 1),
        ray_actor_options={"num_cpus": cfg.model_num_cpus},
    ).bind(
        {name: spec.model_dump() for name, spec in cfg.models.items()},
        max_batch_size=cfg.max_batch_size,
        batch_wait_timeout_s=cfg.batch_wait_timeout_s,
        torch_threads=cfg.torch_threads,
    )
    products: dict[str, Any] = {}
    if cfg.diarization.enabled:
        diarization_config(cfg.diarization.config)  # bad overrides fail here, not in a replica
        d = cfg.diarization
        products["diarization"] = Diarization.options(
            autoscaling_config=d.autoscaling.to_serve(),
            ray_actor_options={"num_cpus": d.num_cpus},
        ).bind(model, d.config)
    product_models = [(f"codec:{n}", CodecModel, a) for n, a in cfg.codecs.items()]
    if cfg.classifier is not None:
        product_models.append(("classifier", ClassifierModel, cfg.classifier))
    if cfg.tse is not None:
        product_models.append(("tse", TSEModel, cfg.tse))
    for key, deployment, pa in product_models:
        if not Path(pa.checkpoint).is_file():
            raise FileNotFoundError(f"{key}: no such checkpoint {pa.checkpoint}")
        kwargs: dict[str, Any] = {"torch_threads": pa.torch_threads}
        if deployment is ClassifierModel:
            kwargs.update(
                max_batch_size=pa.max_batch_size, batch_wait_timeout_s=pa.batch_wait_timeout_s
            )
        products[key] = deployment.options(
            name=key.replace(":", "_"),
            autoscaling_config=pa.autoscaling.to_serve(),
            ray_actor_options={"num_cpus": pa.num_cpus},
        ).bind(pa.checkpoint, **kwargs)
    ingress = VoxrayService.options(ray_actor_options={"num_cpus": cfg.ingress_num_cpus})
    return ingress.bind(
        model, cfg.model_dump(mode="json", exclude={"checkpoint", "backend"}), products
    )

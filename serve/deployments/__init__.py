"""The model deployments of the Serve app, one module per product, and how each is bound.

Each module is a thin Ray Serve adapter around a ``models/pipelines`` facade (the embedding
model of the speaker routes, diarization, TSE, codecs, the sound classifier). A module with an
optional deployment also declares its :class:`Product`: the ``AppArgs`` field that enables it,
the handle key the routes ask ``ServeContext.handle`` for, and how ``build_app`` binds it.

Every model deployment asks for ``num_gpus`` (``AppArgs.model_num_gpus``, a product's
``num_gpus``; fractional shares one GPU) and runs on the device
``models.pipelines.placement.serving_device`` picks inside the replica, and is a
:class:`ReplicaHealth`: Serve's controller calls its ``check_health`` every
``HEALTH["health_check_period_s"]`` and replaces a replica that fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from models.hub import resolve_checkpoint
from models.pipelines.placement import fatal_cuda_error

log = logging.getLogger(__name__)

# An embedding call whose replica dies while it runs: Serve's router (Ray 2.60) re-sends the
# calls the dead replica held, and tests/serve/test_replica_faults.py sees every request of a
# kill -9 under load answered without help. When the death does reach the caller as a
# RayActorError (ActorDiedError, ActorUnavailableError), the callers (the ingress's routes, the
# diarization replicas) send the call again, a bounded number of times with a short backoff:
# embedding is idempotent.
EMBED_ATTEMPTS = 3
EMBED_RETRY_BACKOFF_S = 0.2

# Serve's health-check options of every model deployment. check_health is cheap (a flag and,
# on a GPU, one synchronize), so a 10 s period costs nothing; 30 s of timeout leaves room for a
# replica whose event loop is busy handing a long file to its worker thread.
HEALTH: dict[str, float] = {"health_check_period_s": 10.0, "health_check_timeout_s": 30.0}


def actor_options(num_cpus: float, num_gpus: float) -> dict[str, float]:
    """``ray_actor_options`` of a model replica (``num_gpus`` only when it asks for one)."""
    return {"num_cpus": num_cpus, **({"num_gpus": num_gpus} if num_gpus else {})}


class ReplicaHealth:
    """Serve's ``check_health`` for a model replica on ``self.device``.

    A replica is unhealthy once a model call hit a fatal CUDA error (:meth:`watch` records it:
    every later kernel would fail too) or when its GPU no longer synchronizes; Serve then
    replaces it while the other replicas keep answering.
    """

    device: torch.device = torch.device("cpu")
    fatal: str | None = None

    @contextmanager
    def watch(self) -> Iterator[None]:
        """Wrap a model call: a fatal CUDA error marks the replica unhealthy, then propagates."""
        try:
            yield
        except RuntimeError as exc:
            if fatal_cuda_error(exc):
                log.error("fatal CUDA error; this replica will be replaced: %s", exc)
                self.fatal = str(exc)
            raise

    def check_health(self) -> None:
        if self.fatal is not None:
            raise RuntimeError(f"replica unusable after a fatal CUDA error: {self.fatal}")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass(frozen=True)
class Product:
    """One optional model deployment, configured by the ``AppArgs`` field ``arg``.

    The field holds a ``ProductModelArgs`` (one deployment, handle key ``key``) or a dict of
    them (one deployment per entry, keys ``"<key>:<name>"``). ``bind``, when given, replaces
    the checkpoint binding for a product configured otherwise (diarization).
    """

    key: str  # the handle key the routes use (and the deployment name, ":" -> "_")
    arg: str  # the AppArgs field that configures it
    deployment: Any  # the @serve.deployment class
    enable_with: str  # what a 404 endpoint_disabled tells the client to set
    batched: bool = False  # the constructor takes max_batch_size / batch_wait_timeout_s
    bind: Callable[[Any, Any], dict[str, Any]] | None = None  # (field value, embedding app)

    def applications(self, cfg: Any, embedding: Any) -> dict[str, Any]:
        """``{handle key: bound deployment}`` for what ``cfg`` (``AppArgs``) enables; validates
        checkpoints here, in the driver, so a bad path fails at deploy time."""
        value = getattr(cfg, self.arg)
        if self.bind is not None:
            return self.bind(value, embedding)
        entries = value.items() if isinstance(value, dict) else [(None, value)]
        out: dict[str, Any] = {}
        for name, pa in entries:
            if pa is None:
                continue
            key = self.key if name is None else f"{self.key}:{name}"
            try:  # a file or a published model by name (fetched into the cache here, once)
                resolve_checkpoint(pa.checkpoint)
            except FileNotFoundError as exc:
                raise FileNotFoundError(f"{key}: {exc}") from exc
            kwargs: dict[str, Any] = {"torch_threads": pa.torch_threads, "num_gpus": pa.num_gpus}
            if self.batched:
                kwargs.update(
                    max_batch_size=pa.max_batch_size, batch_wait_timeout_s=pa.batch_wait_timeout_s
                )
            out[key] = self.deployment.options(
                name=key.replace(":", "_"),
                autoscaling_config=pa.autoscaling.to_serve(),
                ray_actor_options=actor_options(pa.num_cpus, pa.num_gpus),
            ).bind(pa.checkpoint, **kwargs)
        return out

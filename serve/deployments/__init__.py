"""The model deployments of the Serve app, one module per product, and how each is bound.

Each module is a thin Ray Serve adapter around a ``models/pipelines`` facade (the embedding
model of the speaker routes, diarization, TSE, codecs, the sound classifier). A module with an
optional deployment also declares its :class:`Product`: the ``AppArgs`` field that enables it,
the handle key the routes ask ``ServeContext.handle`` for, and how ``build_app`` binds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.hub import resolve_checkpoint


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
            kwargs: dict[str, Any] = {"torch_threads": pa.torch_threads}
            if self.batched:
                kwargs.update(
                    max_batch_size=pa.max_batch_size, batch_wait_timeout_s=pa.batch_wait_timeout_s
                )
            out[key] = self.deployment.options(
                name=key.replace(":", "_"),
                autoscaling_config=pa.autoscaling.to_serve(),
                ray_actor_options={"num_cpus": pa.num_cpus},
            ).bind(pa.checkpoint, **kwargs)
        return out

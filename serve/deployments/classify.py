"""The sound-classification deployment: a thin Ray Serve adapter around ``SoundClassifier``.

``ClassifyModel`` wraps a ``models.pipelines.classify.SoundClassifier`` (ACDNet, arXiv
2103.03483) with Serve's dynamic batching (``@serve.batch``): the 10 crops of every clip in a
batch go through the network together. The batching logic is :func:`classify_many`, tested
without Ray. Errors a caller causes come back as ``str`` messages (never exceptions across the
handle), which the ingress (``serve/routes/classify.py``) turns into 400.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import torch
from ray import serve

from models.pipelines.classify import SoundClassifier
from models.pipelines.placement import serving_device
from models.waveform import AudioError
from serve.deployments import HEALTH, Product, ReplicaHealth

log = logging.getLogger(__name__)


def classify_many(
    clf: SoundClassifier, wavs: list[np.ndarray], top_ks: list[int]
) -> list[list[tuple[str, float]] | str]:
    """Top-``k_i`` ``(label, prob)`` per clip ``(T_i,)`` at ``clf.sample_rate``, most probable
    first; an unusable clip yields its error message instead of failing the others."""
    try:
        probs = clf.predict_proba(wavs, clf.sample_rate)  # (N, C)
        rows: list[Any] = list(probs)
    except AudioError:
        rows = []
        for wav in wavs:  # find the bad clip(s): one by one
            try:
                rows.append(clf.predict_proba([wav], clf.sample_rate)[0])
            except AudioError as exc:
                rows.append(str(exc))
    out: list[list[tuple[str, float]] | str] = []
    for row, k in zip(rows, top_ks, strict=True):
        if isinstance(row, str):
            out.append(row)
            continue
        vals, idx = row.topk(min(max(int(k), 1), row.shape[-1]))
        out.append([(clf.classes[int(i)], float(v)) for v, i in zip(vals, idx, strict=True)])
    return out


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64, **HEALTH)
class ClassifyModel(ReplicaHealth):
    """Waveforms -> top-k labels, dynamically batched."""

    def __init__(
        self,
        checkpoint: str,
        *,
        torch_threads: int = 1,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
        num_gpus: float = 0.0,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.device = serving_device(num_gpus)
        self.clf = SoundClassifier.from_checkpoint(checkpoint)
        self.clf.model.to(self.device)  # the classifier follows its weights' device
        self.classify.set_max_batch_size(max_batch_size)
        self.classify.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"sample_rate": self.clf.sample_rate, "classes": list(self.clf.classes)}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def classify(
        self, wavs: list[np.ndarray], top_ks: list[int]
    ) -> list[list[tuple[str, float]] | str]:
        """One clip per caller: ``(T,)`` float32 at the classifier's rate -> top-k or an error."""
        with self.watch():
            return await asyncio.to_thread(classify_many, self.clf, wavs, top_ks)


PRODUCT = Product(
    key="classify",
    arg="classify",
    deployment=ClassifyModel,
    enable_with="classify={checkpoint: ...}",
    batched=True,
)

"""Codec and classifier deployments: thin Ray Serve adapters around ``models/pipelines``.

``CodecModel`` wraps one ``CodecPipeline`` (SoundStream / TinyStream, arXiv 2107.03312): encode
``(T,)`` float32 at the codec's rate -> VXRC bytes, decode bytes -> waveform. Clips differ in
length and the convolutional codec gains little from padding them together, so it is not
batched; each configured codec is its own autoscaled deployment. ``ClassifierModel`` wraps a
``SoundClassifier`` (ACDNet, arXiv 2103.03483) with Serve's dynamic batching (``@serve.batch``):
the 10 crops of every clip in a batch go through the network together. The batching logic is
:func:`classify_many`, tested without Ray. Errors a caller causes come back as ``str`` messages
(never exceptions across the handle), which the ingress turns into 4xx.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import torch
from ray import serve

from models.pipelines.classify import ClassifierInputError, SoundClassifier
from models.pipelines.codec import CodecFormatError, CodecPipeline, EncodedAudio
from models.pipelines.inputs import AudioInputError

log = logging.getLogger(__name__)


def classify_many(
    clf: SoundClassifier, wavs: list[np.ndarray], top_ks: list[int]
) -> list[list[tuple[str, float]] | str]:
    """Top-``k_i`` ``(label, prob)`` per clip ``(T_i,)`` at ``clf.sample_rate``, most probable
    first; an unusable clip yields its error message instead of failing the others."""
    try:
        probs = clf.predict_proba(wavs, clf.sample_rate)  # (N, C)
        rows: list[Any] = list(probs)
    except ClassifierInputError:
        rows = []
        for wav in wavs:  # find the bad clip(s): one by one
            try:
                rows.append(clf.predict_proba([wav], clf.sample_rate)[0])
            except ClassifierInputError as exc:
                rows.append(str(exc))
    out: list[list[tuple[str, float]] | str] = []
    for row, k in zip(rows, top_ks, strict=True):
        if isinstance(row, str):
            out.append(row)
            continue
        vals, idx = row.topk(min(max(int(k), 1), row.shape[-1]))
        out.append([(clf.classes[int(i)], float(v)) for v, i in zip(vals, idx, strict=True)])
    return out


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
class CodecModel:
    """One codec checkpoint: ``encode``/``decode`` off the event loop."""

    def __init__(self, checkpoint: str, *, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self.pipeline = CodecPipeline.from_checkpoint(checkpoint)

    def info(self) -> dict[str, Any]:
        p = self.pipeline
        return {
            "model_id": p.model_id,
            "sample_rate": p.sample_rate,
            "hop_length": p.hop_length,
            "num_quantizers": p.num_quantizers,
            "bitrate": p.bitrate(),
        }

    def _encode(self, wav: np.ndarray, num_quantizers: int | None) -> dict[str, Any] | str:
        try:
            enc = self.pipeline.encode(wav, self.pipeline.sample_rate, num_quantizers)
        except (AudioInputError, ValueError) as exc:
            return str(exc)
        return {
            "data": enc.to_bytes(),
            "bitrate": enc.bitrate,
            "frames": enc.num_frames,
            "num_quantizers": enc.num_quantizers,
            "model_id": enc.model_id,
            "duration_s": enc.num_samples / enc.sample_rate,
        }

    async def encode(self, wav: np.ndarray, num_quantizers: int | None = None) -> dict | str:
        """``(T,)`` float32 at the codec's rate -> ``{data: VXRC bytes, bitrate, frames, ...}``."""
        return await asyncio.to_thread(self._encode, wav, num_quantizers)

    def _decode(self, data: bytes) -> np.ndarray | str:
        try:
            return self.pipeline.decode(EncodedAudio.from_bytes(data))
        except (CodecFormatError, ValueError) as exc:
            return str(exc)

    async def decode(self, data: bytes) -> np.ndarray | str:
        """VXRC bytes -> ``(num_samples,)`` float32 at the codec's rate, or an error message."""
        return await asyncio.to_thread(self._decode, data)


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class ClassifierModel:
    """Waveforms -> top-k labels, dynamically batched."""

    def __init__(
        self,
        checkpoint: str,
        *,
        torch_threads: int = 1,
        max_batch_size: int = 8,
        batch_wait_timeout_s: float = 0.01,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.clf = SoundClassifier.from_checkpoint(checkpoint)
        self.classify.set_max_batch_size(max_batch_size)
        self.classify.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"sample_rate": self.clf.sample_rate, "classes": list(self.clf.classes)}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def classify(
        self, wavs: list[np.ndarray], top_ks: list[int]
    ) -> list[list[tuple[str, float]] | str]:
        """One clip per caller: ``(T,)`` float32 at the classifier's rate -> top-k or an error."""
        return await asyncio.to_thread(classify_many, self.clf, wavs, top_ks)

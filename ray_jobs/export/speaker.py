"""ONNX graph of a ``speaker``-family model (Ray-free; written by ``models/onnx_export.py``).

    python -m ray_jobs.export --checkpoint CKPT.pt --format onnx [--int8] --output model.onnx

The graph is the registered model alone: input ``feats: (batch, frames, feat_dim)`` float32
Kaldi fbank (mean-normalised, as ``models/features.py`` makes it), output ``embedding: (batch,
embed_dim)`` **raw, not L2-normalised** (the registry's speaker contract); the front end and the
normalisation run in ``models/pipelines/onnx_backend.py``. Batch and frame axes are dynamic.

Only models that read the Kaldi fbank export: the ONNX backend computes that front end. A model
with its own front end (``front_end_config``, e.g. GE2E's mel and partial windows) is refused
with an ``ExportError`` rather than exported with a front end it was not trained on.

Metadata props besides the common ones (``models/onnx_export.py``): ``sample_rate``,
``feat_dim``, ``embed_dim``, ``fbank`` (JSON of the ``FbankConfig``), ``normalized``. The
``model_id`` is ``name:sha12`` of the checkpoint, as ``SpeakerEmbedder.from_checkpoint``.

The graph builder lives beside the runtime that reads it, ``models.pipelines.onnx_backend``, so
Serve's CPU replicas export with the same function (``cached_onnx``) without importing this job.
"""

from __future__ import annotations

from models.pipelines.onnx_backend import speaker_graph as graph

__all__ = ["graph"]

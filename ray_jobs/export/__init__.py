"""``python -m ray_jobs.export``: export a checkpoint of any family to ONNX, optionally INT8.

Shape: core ``core.py`` (dispatch by family) + ``onnx.py`` (the one exporter) + ``<family>.py``
(each family's graph: speaker, codec, classify) + ``sizes.py``; Ray adapter: none (one process);
CLI ``cli.py``.
"""

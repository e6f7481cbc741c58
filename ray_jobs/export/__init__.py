"""``python -m ray_jobs.export``: export a speaker checkpoint to ONNX, optionally with dynamic INT8 weights."""

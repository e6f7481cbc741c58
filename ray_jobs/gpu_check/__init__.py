"""``python -m ray_jobs.gpu_check`` (``make gpu-check``): training-step and extraction throughput
and peak memory on one GPU, bf16 and fp16, appended to BENCHMARKS.md.

Shape: core ``core.py`` (Ray-free: the GPU image has torch but no Ray), CLI ``cli.py``.
"""

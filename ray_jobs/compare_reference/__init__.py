"""``python -m ray_jobs.compare_reference``: check voxray's 3D-Speaker-compatible speaker models
against the reference implementation.

Shape: core ``core.py`` (Ray-free); Ray adapter: none (one process); CLI ``cli.py``.
"""

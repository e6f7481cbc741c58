"""``python -m ray_jobs.import_checkpoint``: convert a published checkpoint into a voxray
checkpoint.

Shape: core ``core.py`` (Ray-free); Ray adapter: none (one process); CLI ``cli.py``.
"""

"""``python -m ray_jobs.import_checkpoint``: convert a published checkpoint into a voxray
checkpoint.

Shape: the core is ``models.hub`` (Ray-free: importers, resolver, cache); Ray adapter: none
(one process); CLI ``cli.py``.
"""

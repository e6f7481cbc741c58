"""``python -m ray_jobs.import_checkpoint``: convert a published checkpoint into a voxray checkpoint."""

"""``python -m ray_jobs.extract``: bulk speaker-embedding extraction on Ray Data: ``python -m ray_jobs.extract``."""

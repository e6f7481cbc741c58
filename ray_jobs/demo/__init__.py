"""``python -m ray_jobs.demo``: ``make demo``: the whole speaker-embedding path on a local Ray cluster, no data needed."""

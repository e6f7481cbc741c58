"""``python -m ray_jobs.demo``: ``make demo``: the whole speaker-embedding path on a local Ray
cluster, no data needed.

Shape: core: ``ray_jobs.train`` (the demo adds no logic of its own); Ray adapter: ``run_training``
of ``ray_jobs/train/job.py``; CLI ``cli.py``.
"""

"""``python -m ray_jobs.extract``: bulk speaker-embedding extraction on Ray Data.

Shape: core ``core.py`` and ``output.py`` (Ray-free); Ray adapter ``job.py``; CLI ``cli.py``.
"""

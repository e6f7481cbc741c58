"""``python -m ray_jobs.diarize``: batch speaker diarization on Ray Data.

Shape: core ``core.py`` (Ray-free); Ray adapter ``job.py``; CLI ``cli.py``.
"""

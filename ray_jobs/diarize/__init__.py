"""``python -m ray_jobs.diarize``: batch speaker diarization on Ray Data: ``python -m ray_jobs.diarize``."""

"""``python -m ray_jobs.diarize``: speaker diarization, of a few files here or many on Ray Data.

Shape: core ``core.py`` (Ray-free); Ray adapter ``job.py``; the in-process loop ``local.py``
(positional audio files: RTTM on stdout, no Ray); CLI ``cli.py``.
"""

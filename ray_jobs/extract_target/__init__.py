"""``python -m ray_jobs.extract_target``: extract one speaker from a long recording: mixture +
enrolment WAV in, target WAV out.

Shape: core ``core.py`` (Ray-free); Ray adapter: none (one process); CLI ``cli.py``.
"""

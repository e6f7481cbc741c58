"""``python -m ray_jobs.codec``: command-line codec: audio files <-> compact ``.vxrc`` code files.

Shape: core ``core.py`` (Ray-free); Ray adapter: none (one process); CLI ``cli.py``.
"""

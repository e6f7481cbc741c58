"""``python -m ray_jobs.verify a.wav b.wav``: same speaker or not, in this process (no Ray, no
server). Shape: core ``core.py`` (Ray-free); CLI ``cli.py``; no Ray adapter (one pair of files).
"""

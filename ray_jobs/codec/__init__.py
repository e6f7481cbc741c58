"""``python -m ray_jobs.codec``: command-line codec: audio files <-> compact ``.vxrc`` code files."""

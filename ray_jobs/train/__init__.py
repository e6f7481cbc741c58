"""``python -m ray_jobs.train``: the one training entry point for every task (see ``job.py``)."""

"""``python -m ray_jobs.train``: the one training entry point for every task.

Shape: core ``experiment.py`` (the one experiment loader), ``loop.py``, ``prepare.py``,
``resume.py`` (the run folder and what ``--resume`` may change) (Ray-free);
Ray adapter ``job.py`` (``run_training``: ``TorchTrainer``), ``worker.py`` and ``data/`` (one
builder per task, ``data/<task>.py``, found by name); CLI ``cli.py``.
"""

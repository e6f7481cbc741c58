"""``python -m ray_jobs.evaluate``: the one evaluation entry point, for every model family.

Shape: core ``<family>.py`` (Ray-free, no CLI; the training job calls it too: speaker, tse, codec,
classify, plus ``lyra.py``, a baseline); Ray adapter: none (evaluation runs in one process); CLI
``cli/`` (a package: ``cli/__init__.py`` is the dispatcher and picks ``cli/<family>.py`` by the
checkpoint's family, since each family takes its own arguments).
"""

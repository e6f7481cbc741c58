"""``python -m ray_jobs.pack``: pack a speech corpus, noise bank or RIR bank into HDF5 shards
(see datasets/hdf5_shards.py).

Shape: core: ``datasets.hdf5_shards`` and ``datasets.manifests`` (the job adds no logic of its
own); Ray adapter: none (file I/O bound, one process); CLI ``cli.py``.
"""

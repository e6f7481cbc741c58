"""``python -m ray_jobs.pack``: pack a speech corpus, noise bank or RIR bank into HDF5 shards
(see datasets/hdf5_shards.py).

Shape: core ``core.py`` (Ray-free); Ray adapter: none (one process); CLI ``core.py`` (``main``).
"""

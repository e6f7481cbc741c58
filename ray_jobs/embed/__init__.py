"""``python -m ray_jobs.embed a.wav -o a.npy``: speaker embeddings of a few files in this process
(no Ray, no server; bulk extraction over a cluster is ``ray_jobs.extract``). Shape: core
``core.py`` (Ray-free); CLI ``cli.py``."""

"""``python -m ray_jobs.bench``: ``make bench``: measure every registered speaker preset and
write BENCHMARKS.md.

Shape: core ``report.py`` (measures the machine, assembles the document) + ``models.py`` (model
measurement) + one section module per product (``speaker``, ``diarize``, ``tse``, ``codec``:
Ray-free); Ray adapter ``ingest.py`` (Ray Data, bulk extraction) and ``service.py`` (the speaker
service); CLI ``cli.py``.
"""

"""``python -m ray_jobs.bench``: ``make bench``: measure every registered speaker preset and write BENCHMARKS.md."""

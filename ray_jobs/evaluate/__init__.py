"""``python -m ray_jobs.evaluate``: the one evaluation entry point; for speaker embedders: EER and minDCF on a labelled tree."""

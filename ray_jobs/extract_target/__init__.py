"""``python -m ray_jobs.extract_target``: extract one speaker from a long recording: mixture + enrolment WAV in, target WAV out."""

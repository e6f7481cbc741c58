"""Ray Tune sweeps over the training job and the diarization pipeline (see README.md)."""

from __future__ import annotations

from datasets.ray_env import keep_workers_on_this_environment

keep_workers_on_this_environment()  # before any module of this package imports ray

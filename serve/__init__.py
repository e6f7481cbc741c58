"""The Ray Serve application: one ingress, one autoscaled deployment per model (see README.md)."""

from __future__ import annotations

from datasets.ray_env import keep_workers_on_this_environment

keep_workers_on_this_environment()  # before any module of this package imports ray

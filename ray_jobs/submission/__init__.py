"""Readable names on the Ray dashboard: submission ids, Ray Data dataset and Tune experiment names.

A job submitted as ``voxray-train-tiny-campplus-20261130-104500`` shows under that id in the
dashboard's job list, and its datasets (``...-train``, ``...-val``) and Tune experiment carry the
same name, so one run's pieces are found together. Outside a submitted job (a local run) the
name is ``voxray-<job>-<config>``.

    ray job submit --working-dir . \\
        --submission-id "$(python -m ray_jobs.submission train ray_jobs/configs/tiny/campplus.yaml)" \\
        -- python -m ray_jobs.train --config ray_jobs/configs/tiny/campplus.yaml ...

``cli.py`` is that command line. Ray-free: the job supervisor passes the submission id to the driver in the job config's
metadata (``RAY_JOB_CONFIG_JSON_ENV_VAR``), read here without importing Ray.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

PREFIX = "voxray"
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
# Set by Ray's job supervisor for the entrypoint process: {"runtime_env": ..., "metadata": ...}
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
_SUBMISSION_KEY = "job_submission_id"


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes (``tiny/CAM++ v2`` -> ``tiny-cam-v2``)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not s:
        raise ValueError(f"{text!r} has no letters or digits to name a run by")
    return s


def config_label(config: str | Path) -> str:
    """A config file's name for ids: its path under ``ray_jobs/configs`` without ``.yaml``
    (``ray_jobs/configs/tiny/campplus.yaml`` -> ``tiny-campplus``), a YAML file elsewhere by its
    stem, and anything else (a checkpoint, a preset name) slugged as given."""
    p = Path(config)
    if p.suffix in (".yaml", ".yml"):
        try:
            return slug(str(p.resolve().relative_to(CONFIGS_DIR).with_suffix("")))
        except ValueError:
            return slug(p.stem)
    return slug(p.stem if p.suffix else str(config))


def submission_id(job: str, config: str | Path, when: float | None = None) -> str:
    """``voxray-<job>-<config>-<UTC yyyymmdd-HHMMSS>``: unique per second, sorts by time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if when is None else when))
    return f"{PREFIX}-{slug(job)}-{config_label(config)}-{stamp}"


def current_submission_id() -> str | None:
    """The submission id of the job this process is the entrypoint of (``ray job submit``), or
    None outside a submitted job."""
    raw = os.environ.get(_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        meta = json.loads(raw).get("metadata") or {}
    except (ValueError, AttributeError):
        return None
    sid = meta.get(_SUBMISSION_KEY)
    return str(sid) if sid else None


def run_name(job: str, config: str | Path) -> str:
    """What this run's datasets and Tune experiment are called: the submission id under
    ``ray job submit``, else ``voxray-<job>-<config>``."""
    return current_submission_id() or f"{PREFIX}-{slug(job)}-{config_label(config)}"

"""Whether a job's output location works on the Ray cluster it runs on (the Ray side of
``datasets/storage.py``).

On a multi-node cluster every node writes results (Ray Train's checkpoints, the workers'
logs, Ray Data's outputs), so a folder that only this machine sees is refused up front, not at
the first checkpoint. Accepted: a URI (``s3://bucket/prefix``, ``gs://...``), or a path under a
shared mount named in ``VOXRAY_SHARED_MOUNTS`` (``os.pathsep``-separated, e.g. ``/mnt/shared``
on the nodes of ``cluster.yaml``): a mount cannot be told apart from a local folder by its
path, so the cluster's owner names it once.

Under ``ray job submit --working-dir .`` the driver runs inside Ray's temporary copy of the
package (``.../runtime_resources/working_dir_files/_ray_pkg_...``), which Ray deletes when the
package is garbage-collected: a relative ``--output`` (or the default ``runs/<name>``) would
resolve into it and be lost, so any output inside it is refused as well, single node or not.

Training *inputs* have the same constraint the other way round: Ray Data's read tasks open the
packed shards on whichever node they run, so on a multi-node cluster the shards (given, or
packed by the driver from an audio tree) must be on a shared mount too. A URI input is copied
into this node's cache (h5py reads local files), so it counts as shared only when the cache
(``$VOXRAY_CACHE``) is on the mount. ``check_inputs`` refuses the rest before any packing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

from datasets import storage
from datasets.hdf5_shards import MANIFEST_NAME
from datasets.ray_data import init_ray
from models.hub.download import cache_root

log = logging.getLogger("ray_jobs.storage")

SHARED_MOUNTS_ENV = "VOXRAY_SHARED_MOUNTS"
_JOB_PACKAGE_MARKER = "working_dir_files"  # Ray's folder of unpacked working_dir packages

WHAT_TO_PASS = (
    "pass --output s3://BUCKET/PREFIX (or gs://...), or a path on a mount every node shares "
    f"and name that mount in {SHARED_MOUNTS_ENV} (README: Cluster > Storage)"
)


INPUTS_WHAT_TO_PASS = (
    "put the data (an audio tree or packed shards) on a mount every node shares and name it "
    f"in {SHARED_MOUNTS_ENV}; for an audio tree also set data.pack_dir to a folder there (or "
    "pack it there first: python -m ray_jobs.pack); for s3:// or gs:// data set VOXRAY_CACHE "
    "to a folder on the mount (README: Cluster > Storage)"
)


def shared_mounts() -> list[Path]:
    raw = os.environ.get(SHARED_MOUNTS_ENV, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p.strip()]


def on_shared_mount(path: Path) -> bool:
    return any(path == m or m in path.parents for m in shared_mounts())


def in_job_package(path: Path) -> bool:
    """True when ``path`` is inside the temporary package copy a submitted job runs in."""
    return _JOB_PACKAGE_MARKER in path.parts and "runtime_resources" in path.parts


def alive_nodes() -> int:
    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_output(output: str | os.PathLike) -> None:
    """Raise a ``ValueError`` that says what to pass when ``output`` cannot hold this job's
    results on the cluster it runs on (module docstring). A job given ``RAY_ADDRESS`` (a
    submitted one) connects here, as it is about to anyway."""
    if storage.is_uri(output):
        storage.resolve(output)  # a bad URI or scheme fails now, not after the work
        return
    path = storage.local_path(output)
    if in_job_package(path):
        raise ValueError(
            f"--output {os.fspath(output)} resolves to {path}, inside the temporary copy of the "
            f"code a submitted job runs in, which Ray deletes; {WHAT_TO_PASS}"
        )
    if on_shared_mount(path):
        return
    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            return  # the job starts a local, single-node cluster
        init_ray()  # a submitted job: connect now (the job would next) and count the nodes
    nodes = alive_nodes()
    if nodes > 1:
        raise ValueError(
            f"--output {path} is a local folder and this Ray cluster has {nodes} nodes: the "
            f"other nodes cannot write checkpoints or results there; {WHAT_TO_PASS}"
        )


def _is_packed(location: str) -> bool:
    """True for a shard manifest (path or URI) or a folder holding one: read as is, never
    packed again."""
    name = location.rstrip("/").rsplit("/", 1)[-1]
    return storage.exists(
        location if name == MANIFEST_NAME else storage.join(location, MANIFEST_NAME)
    )


def check_inputs(inputs: dict[str, str], pack_root: str | os.PathLike) -> None:
    """Raise a ``ValueError`` that says what to pass when a training input (``{"train": path or
    URI, "noise": ...}``, empty values skipped) or the folder its shards are packed into
    (``pack_root``) is seen by this node only, on a cluster with more than one node (module
    docstring). Call after :func:`check_output`, which connects a submitted job."""
    if not ray.is_initialized():
        return
    nodes = alive_nodes()
    if nodes <= 1:
        return
    cache = (cache_root() / "storage").resolve()
    local_only: list[str] = []
    for field, value in inputs.items():
        if not value:
            continue
        if storage.is_uri(value):
            if not on_shared_mount(cache):
                local_only.append(f"data.{field} {value} (copied into this node's cache {cache})")
        elif not on_shared_mount(storage.local_path(value)):
            local_only.append(f"data.{field} {storage.local_path(value)}")
    packs = any(not _is_packed(v) for v in inputs.values() if v)
    root = Path(pack_root).resolve()
    if packs and not on_shared_mount(root):
        local_only.append(f"the shards packed from the data, in {root}")
    if local_only:
        raise ValueError(
            f"this Ray cluster has {nodes} nodes and its data-reading tasks run on any "
            f"of them, but these are on this node only: {'; '.join(local_only)}. "
            + INPUTS_WHAT_TO_PASS
        )

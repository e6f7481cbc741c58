"""A job on a two-node Ray cluster refuses a local ``--output`` up front and says what to pass;
a URI or a path on a named shared mount is accepted.

The cluster is Ray's own ``cluster_utils.Cluster`` (a head and a second raylet on this machine),
started in a subprocess with its own temp dir and GCS port, since the session's shared cluster
(``ray_cluster``) is a single node and one process connects to one cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import logging, os, socket, sys
    from pathlib import Path

    from datasets.ray_env import keep_workers_on_this_environment
    keep_workers_on_this_environment()
    import ray
    from ray.cluster_utils import Cluster

    with socket.socket() as s:  # never the default 6379 that other clusters may use
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1",
        "gcs_server_port": port})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(message)s")
    from ray_jobs.storage import alive_nodes, check_output
    from ray_jobs.train.cli import main

    out = Path(sys.argv[1])
    print("NODES", alive_nodes())
    # the training CLI, as a user runs it: exit 2 before any data is read or packed
    rc = main(["--config", "ray_jobs/configs/tiny/campplus.yaml", "--data-root",
               str(out / "no-data-needed"), "--output", str(out / "run")])
    print("RC", rc, "CREATED", (out / "run").exists())
    check_output("s3://bucket/runs/x")
    os.environ["VOXRAY_SHARED_MOUNTS"] = str(out / "shared")
    check_output(out / "shared" / "run")
    print("ACCEPTED")
    ray.shutdown()
    cluster.shutdown()
    """
)


def test_local_output_refused_on_a_two_node_cluster(tmp_path):
    # a short private temp dir: Ray's socket paths must stay under 107 characters, and the
    # cluster's address file must not replace the shared cluster's
    ray_tmp = tempfile.mkdtemp(prefix="vxr", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "NODES 2" in out
    assert "RC 2 CREATED False" in out, out
    assert "is a local folder and this Ray cluster has 2 nodes" in out
    assert "pass --output s3://BUCKET/PREFIX" in out and "VOXRAY_SHARED_MOUNTS" in out
    assert "ACCEPTED" in out

"""A node lost mid-training on a two-node cluster (``ray.cluster_utils.Cluster``): two Ray Train
workers, one per node (``train.placement_strategy: SPREAD``); one node is removed after an epoch
checkpoint, and training resumes from the checkpoint in shared storage on the survivor (the
restarted worker group packs onto it) and finishes.

The cluster runs in a child process (the driver below), so it never meets the session's shared
``ray.init`` cluster; it prints its measurements as one JSON line.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.cluster_head import client_env

pytestmark = pytest.mark.ray

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "ray_jobs" / "configs" / "tiny" / "campplus.yaml"
EPOCHS = 5
DRIVER_TIMEOUT_S = 420


def _train_worker_nodes() -> list[str]:
    """The node of every alive Ray Train worker actor (the GCS actor table: this cluster runs
    without a dashboard, which the state API would need)."""
    from ray._private.state import actors

    table = actors(actor_state_name="ALIVE").values()
    return sorted(
        a["Address"]["NodeID"] for a in table if "TrainWorker" in (a["ActorClassName"] or "")
    )


def _local_output_refused(path: Path) -> str:
    """``check_output``'s message for a local folder on this two-node cluster when it is not
    named a shared mount ('' if it was accepted); on the named mount it passes."""
    import os

    from ray_jobs.storage import check_output

    mounts = os.environ.pop("VOXRAY_SHARED_MOUNTS")
    try:
        check_output(path)
        message = ""
    except ValueError as exc:
        message = str(exc)
    finally:
        os.environ["VOXRAY_SHARED_MOUNTS"] = mounts
    check_output(path)  # named as the shared mount: accepted
    return message


def _local_data_refused(data: Path, pack_root: Path) -> str:
    """``check_inputs``' message for training data and a pack folder outside the named shared
    mount ('' if accepted); on the mount both pass."""
    import os

    from ray_jobs.storage import check_inputs

    mounts = os.environ.pop("VOXRAY_SHARED_MOUNTS")
    try:
        check_inputs({"train": str(data), "val": ""}, pack_root)
        message = ""
    except ValueError as exc:
        message = str(exc)
    finally:
        os.environ["VOXRAY_SHARED_MOUNTS"] = mounts
    check_inputs({"train": str(data), "val": ""}, pack_root)  # on the named mount: accepted
    return message


def _drive(storage: Path) -> dict:
    """Run the two-node scenario; returns what happened and how long each part took."""
    import ray
    from ray.cluster_utils import Cluster

    from datasets.synth import generate_corpus
    from ray_jobs.train.experiment import load_experiment
    from ray_jobs.train.job import run_training
    from tests.cluster_head import free_ports

    generate_corpus(storage / "data", num_speakers=6, utts_per_speaker=4, seconds=(1.2, 1.6))
    gcs_port, dash_port = free_ports(2)
    temp_dir = tempfile.mkdtemp(prefix="vx2n", dir="/tmp")
    # a CPU-less head (the driver), and two worker nodes: each holds one Train worker (half a
    # CPU) and has CPU left for the Ray Data tasks that feed it, also with both workers on it
    node_args = {"num_cpus": 2, "temp_dir": temp_dir}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "gcs_server_port": gcs_port, "include_dashboard": False,
                        "dashboard_port": dash_port, "temp_dir": temp_dir},
    )  # fmt: skip
    try:
        survivor = cluster.add_node(**node_args)
        doomed = cluster.add_node(**node_args)
        cluster.wait_for_nodes(timeout=60)
        ray.init(
            address=cluster.address,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}},
            log_to_driver=False,
        )
        refused = _local_output_refused(storage / "local-run")
        data_refused = _local_data_refused(storage / "data", storage / "run")
        exp = load_experiment(
            CONFIG,
            overrides={
                "data.train": str(storage / "data"),
                "data.crops_per_utterance": 3,
                "train.epochs": EPOCHS,
                "train.num_workers": 2,
                "train.cpus_per_worker": 0.5,
                "train.placement_strategy": "SPREAD",
                "train.max_failures": 2,
            },
        )
        out = storage / "run"
        result: dict = {}

        def target():
            try:
                result["report"] = run_training(exp, out)
            except BaseException as exc:  # reported below
                result["error"] = repr(exc)

        t_start = time.monotonic()
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        progress = out / "progress" / "rank0.json"
        snapshot = out / "ray_results" / exp.name / "checkpoint_manager_snapshot.json"
        killed = None
        deadline = time.monotonic() + DRIVER_TIMEOUT_S - 60
        while time.monotonic() < deadline and thread.is_alive():
            if progress.is_file() and snapshot.is_file():
                info = json.loads(progress.read_text())
                registered = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
                if registered and 1 <= info["epoch"] < EPOCHS - 1 and info["phase"] == "train":
                    killed = info
                    break
            time.sleep(0.2)
        if killed is None:
            return {"error": "training finished or stalled before the node could be removed"}
        worker_nodes = _train_worker_nodes()
        t_kill = time.monotonic()
        cluster.remove_node(doomed, allow_graceful=False)
        t_resumed, nodes_after = None, []
        while time.monotonic() < deadline and thread.is_alive():
            if progress.is_file():
                info = json.loads(progress.read_text())
                if info["pid"] != killed["pid"] and info["phase"] == "train":
                    t_resumed = time.monotonic()
                    nodes_after = _train_worker_nodes()
                    break
            time.sleep(0.2)
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
        from models import read_checkpoint

        meta = read_checkpoint(out / "model.pt")["meta"] if (out / "model.pt").is_file() else {}
        return {
            "error": result.get("error"),
            "local_output_refused": refused,
            "local_data_refused": data_refused,
            "killed_epoch": killed["epoch"],
            "nodes_before": worker_nodes,
            "nodes_after": nodes_after,
            "survivor": survivor.node_id,
            "doomed": doomed.node_id,
            "final_epoch": meta.get("epoch"),
            "resumed_from": meta.get("resumed_from"),
            "train_epoch": (result.get("report") or {}).get("train_metrics", {}).get("epoch"),
            "to_kill_s": t_kill - t_start,
            "resume_after_node_loss_s": None if t_resumed is None else t_resumed - t_kill,
            "total_s": time.monotonic() - t_start,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_training_resumes_from_storage_after_a_node_is_lost(tmp_path):
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    # every process of the cluster (started by the driver) and the driver: token auth on
    env = client_env(token, "")
    env.pop("RAY_ADDRESS")
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["VOXRAY_SHARED_MOUNTS"] = str(tmp_path)  # the "shared mount" every node writes to
    r = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=DRIVER_TIMEOUT_S,
    )  # fmt: skip
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-5000:]
    got = json.loads(lines[-1])
    logging.getLogger(__name__).info("two-node fault: %s", got)
    assert got["error"] is None, got
    # a local --output on a multi-node cluster is refused up front, saying what to pass
    assert "3 nodes" in got["local_output_refused"] and "s3://" in got["local_output_refused"]
    # so is training data (and its packed shards) that only the driver's node sees
    data_msg = got["local_data_refused"]
    assert "data.train" in data_msg and "shards packed" in data_msg and "pack_dir" in data_msg
    assert got["resume_after_node_loss_s"] is not None, got
    # one worker per node before the loss; after it, the restarted group runs on the survivor
    assert sorted(got["nodes_before"]) == sorted({got["survivor"], got["doomed"]}), got
    assert got["nodes_after"] and set(got["nodes_after"]) == {got["survivor"]}, got
    assert got["final_epoch"] == got["train_epoch"] == EPOCHS, got
    assert got["resumed_from"], f"the final run did not resume from a checkpoint: {got}"


if __name__ == "__main__":
    sys.stdout.write(json.dumps(_drive(Path(sys.argv[1]))) + "\n")

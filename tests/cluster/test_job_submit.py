"""``ray job submit --working-dir .`` against a real head (token auth on): a tiny training job,
then an extraction job that reads the trained ``model.pt`` back from storage. Storage is a tmp
folder outside the working dir, as a shared mount is on a cluster; the job's code is the
uploaded package, its packages the head's venv (``tests/cluster_head.py``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from ray_jobs.submission import submission_id
from tests.cluster_head import LocalHead

pytestmark = pytest.mark.ray
log = logging.getLogger(__name__)

CONFIG = "ray_jobs/configs/tiny/campplus.yaml"
JOB_TIMEOUT_S = 240
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _api(head: LocalHead) -> httpx.Client:
    """The jobs REST API with the head's token (what `ray job` sends for us)."""
    token = head.token_path.read_text().strip()
    return httpx.Client(
        base_url=head.address, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def submit(
    head: LocalHead, sid: str, *entrypoint: str, extra: tuple[str, ...] = ()
) -> dict[str, float]:
    """Submit through the CLI; wait (bounded) until the job ends. Returns the seconds from the
    submit command to RUNNING, to the job's first log line, and to the end; raises with the
    job's logs unless it SUCCEEDED. ``extra``: more ``ray job submit`` options."""
    t0 = time.monotonic()
    for attempt in range(3):
        r = head.ray(
            "job", "submit", "--address", head.address, "--working-dir", ".",
            "--submission-id", sid, "--no-wait", *extra, "--", *entrypoint,
            timeout=120,
        )  # fmt: skip
        out = r.stdout + r.stderr
        # a head just started under load may not reach its job agent yet ("Server
        # disconnected"): the submission is sent again, a bounded number of times
        if r.returncode == 0 or "already exists" in out or "disconnected" not in out:
            break
        log.warning("submission %s not accepted (attempt %d): %s", sid, attempt + 1, out[-300:])
        time.sleep(5)
    assert r.returncode == 0 or "already exists" in out, out
    times: dict[str, float] = {}
    deadline = t0 + JOB_TIMEOUT_S
    with _api(head) as api:
        status = ""
        while time.monotonic() < deadline:
            status = api.get(f"/api/jobs/{sid}").raise_for_status().json()["status"]
            now = time.monotonic() - t0
            if status != "PENDING":
                times.setdefault("to_running_s", now)
            if "to_first_log_s" not in times and api.get(f"/api/jobs/{sid}/logs").json()["logs"]:
                times["to_first_log_s"] = now
            if status in TERMINAL:
                break
            time.sleep(0.25)
        times["total_s"] = time.monotonic() - t0
        logs = api.get(f"/api/jobs/{sid}/logs").json()["logs"]
    assert status == "SUCCEEDED", f"{sid}: {status} after {times['total_s']:.0f} s\n{logs[-4000:]}"
    times["logs"] = logs  # type: ignore[assignment]
    log.info("%s: %s", sid, {k: round(v, 2) for k, v in times.items() if k != "logs"})
    return times


def shared(storage: Path) -> tuple[str, ...]:
    """Names the storage folder as the cluster's shared mount for the job (README: Storage)."""
    env = {"env_vars": {"VOXRAY_SHARED_MOUNTS": str(storage)}}
    return ("--runtime-env-json", json.dumps(env))


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    """The 'shared mount': a tmp folder outside the working dir, holding the corpus."""
    from datasets.synth import generate_corpus

    root = tmp_path_factory.mktemp("storage")
    generate_corpus(root / "data", num_speakers=4, utts_per_speaker=4, seconds=(1.2, 1.6), seed=7)
    return root


def test_train_then_extract_through_ray_job_submit(ray_head, storage):
    train_id = submission_id("train", CONFIG)
    assert train_id.startswith("voxray-train-tiny-campplus-")
    out = storage / "runs" / "train"
    t = submit(
        ray_head, train_id, "python", "-m", "ray_jobs.train", "--config", CONFIG,
        "--data-root", str(storage / "data"), "--output", str(out),
        "--set", "train.epochs=1", "--set", "train.cpus_per_worker=0.5", extra=shared(storage),
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["epochs_run"] == 1 and Path(report["checkpoint"]) == out / "model.pt"
    assert (out / "model.pt").stat().st_size > 0
    # Train wrote its checkpoints to storage, not into the job's copy of the code
    assert list((out / "ray_results").rglob("checkpoint_*/model.pt"))
    # the Ray Data dataset carries the job's name (Ray Data logs it when it executes)
    assert f"{train_id}-train" in t["logs"]

    extract_id = submission_id("extract", "tiny-campplus")
    emb = storage / "embeddings"
    submit(
        ray_head, extract_id, "python", "-m", "ray_jobs.extract",
        "--data-root", str(storage / "data"), "--checkpoint", str(out / "model.pt"),
        "--output", str(emb), "--batch-size", "4", "--num-actors", "1", extra=shared(storage),
    )  # fmt: skip
    rows = pq.read_table(emb / "utterances.parquet").to_pylist()
    assert len(rows) == 16 and {r["speaker_id"] for r in rows} == {f"spk{i:03d}" for i in range(4)}
    assert all(len(r["embedding"]) == rows[0]["embedding"].__len__() > 0 for r in rows)

    # both jobs are listed under their readable ids
    with httpx.Client(base_url=ray_head.address, timeout=30) as anon:
        # and the API refuses a client without the token
        assert anon.get("/api/jobs/").status_code == 401
    with _api(ray_head) as api:
        listed = {j["submission_id"]: j["status"] for j in api.get("/api/jobs/").json()}
    assert listed[train_id] == listed[extract_id] == "SUCCEEDED"


def test_token_less_client_is_refused(ray_head):
    env = {**ray_head.env, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_AUTH_TOKEN_PATH")
    r = ray_head.ray("job", "list", "--address", ray_head.address, timeout=60, env=env)
    assert r.returncode != 0 and "token" in (r.stdout + r.stderr).lower()

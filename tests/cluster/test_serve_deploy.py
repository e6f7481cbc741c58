"""``serve deploy`` of the shipped ``serve/serve_config.yaml`` against a real head (token auth on):
a copy pointed at a tiny checkpoint, a tmp enrollment database, a key file and a port of its
own. The service answers; after enrolling, a redeploy (new replicas) keeps the speakers, and a
changed ``user_config`` threshold is applied by the running replica, without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import torch
import yaml

import models
from datasets.synth import generate_corpus
from tests.cluster_head import LocalHead, free_ports
from tests.serve.helpers import KEYS, b64, expect_ok, write_keys

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml"
READY_TIMEOUT_S = 150
AUTH = {"Authorization": f"Bearer {KEYS['admin']}"}


def deploy_config(root: Path, port: int, user_config: dict | None = None, **arg_overrides) -> Path:
    """The shipped config with only what a site changes: where the model, the database and the
    HTTP port are, and the 2-CPU test cluster's replica sizes."""
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = cfg["applications"]
    app["args"].update(
        checkpoint=str(root / "model.pt"),
        db=str(root / "state" / "speakers.db"),
        api_keys_file=str(write_keys(root)),
        autoscaling={"min_replicas": 1, "max_replicas": 1},
        model_num_cpus=0,
        ingress_num_cpus=0,
        **arg_overrides,
    )
    if user_config is not None:  # what an operator edits to change the threshold in place
        app["deployments"] = [{"name": "VoxrayService", "user_config": user_config}]
    ServeDeploySchema.model_validate(cfg)  # Ray's own schema
    path = root / f"serve_config_{len(list(root.glob('serve_config_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ingress_replicas(head: LocalHead) -> list[str]:
    """Ids of the alive ingress replica actors (the state API, with the head's token)."""
    token = head.token_path.read_text().strip()
    r = httpx.get(
        f"{head.address}/api/v0/actors",
        params={"filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE",
                "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )  # fmt: skip
    r.raise_for_status()
    rows = r.json()["data"]["result"]["result"]
    return sorted(a["actor_id"] for a in rows if "VoxrayService" in (a.get("class_name") or ""))


def wait_healthy(base: str, want: dict, timeout: float = READY_TIMEOUT_S) -> dict:
    """``GET /config`` until it answers with ``want``'s items (the new deployment is live)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/config", headers=AUTH, timeout=10)
            if r.status_code == 200:
                last = r.json()
                if all(last.get(k) == v for k, v in want.items()):
                    return expect_ok(httpx.get(f"{base}/health", timeout=10))  # open
            else:
                last = r.status_code
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise TimeoutError(f"service not live with {want} in {timeout:.0f} s; last answer {last}")


def test_serve_deploy_answers_and_a_redeploy_keeps_the_speakers(ray_head: LocalHead, tmp_path):
    torch.manual_seed(0)
    models.save_checkpoint(models.build_model("campplus-tiny").eval(), tmp_path / "model.pt")
    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"

    r = ray_head.serve("deploy", str(deploy_config(tmp_path, port, top_k=5)),
                       "--address", ray_head.address, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    health = wait_healthy(base, {"top_k": 5})
    assert health["status"] == "ok" and health["num_speakers"] == 0

    generate_corpus(tmp_path / "audio", num_speakers=1, utts_per_speaker=2, seconds=(1.0, 1.2))
    a, b = (p.read_bytes() for p in sorted((tmp_path / "audio").rglob("*.wav")))
    v = expect_ok(httpx.post(f"{base}/verify", json={"audio_a": b64(a), "audio_b": b64(a)},
                             headers=AUTH, timeout=60))  # fmt: skip
    assert v["score"] == pytest.approx(1.0, abs=1e-4) and v["same"] is True
    ann = expect_ok(
        httpx.post(
            f"{base}/speakers",
            json={"name": "Ann", "audio": [b64(a), b64(b)]},
            headers=AUTH,
            timeout=60,
        )
    )

    # a changed argument redeploys the app: new replicas, same database file
    r = ray_head.serve("deploy", str(deploy_config(tmp_path, port, top_k=3)),
                       "--address", ray_head.address, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    health = wait_healthy(base, {"top_k": 3})
    assert health["num_speakers"] == 1
    speakers = expect_ok(httpx.get(f"{base}/speakers", headers=AUTH, timeout=30))["speakers"]
    assert [(s["id"], s["name"]) for s in speakers] == [(ann["id"], "Ann")]
    assert (tmp_path / "state" / "speakers.db").is_file()

    # only the user_config changes: Serve calls reconfigure() on the running ingress replica
    before = ingress_replicas(ray_head)
    r = ray_head.serve("deploy", str(deploy_config(tmp_path, port, {"threshold": 0.42, "top_k": 3},
                                                   top_k=3)),
                       "--address", ray_head.address, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    wait_healthy(base, {"threshold": 0.42})
    assert ingress_replicas(ray_head) == before  # the same actors: no restart

    r = ray_head.serve("shutdown", "--yes", "--address", ray_head.address, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

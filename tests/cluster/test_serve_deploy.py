"""``serve deploy`` of the shipped ``serve/serve_config.yaml`` against a real head (token auth on):
a copy pointed at a tiny checkpoint, a tmp enrollment database and a port of its own. The
service answers; after enrolling, a redeploy (new replicas) keeps the speakers."""

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
from tests.serve.helpers import b64, expect_ok

pytestmark = pytest.mark.ray

CONFIG = Path(__file__).resolve().parents[2] / "serve" / "serve_config.yaml"
READY_TIMEOUT_S = 150


def deploy_config(root: Path, port: int, **arg_overrides) -> Path:
    """The shipped config with only what a site changes: where the model, the database and the
    HTTP port are, and the 2-CPU test cluster's replica sizes."""
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    (app,) = cfg["applications"]
    app["args"].update(
        checkpoint=str(root / "model.pt"),
        db=str(root / "state" / "speakers.db"),
        autoscaling={"min_replicas": 1, "max_replicas": 1},
        model_num_cpus=0,
        ingress_num_cpus=0,
        **arg_overrides,
    )
    ServeDeploySchema.model_validate(cfg)  # Ray's own schema
    path = root / f"serve_config_{len(list(root.glob('serve_config_*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def wait_healthy(base: str, want: dict, timeout: float = READY_TIMEOUT_S) -> dict:
    """``GET /config`` until it answers with ``want``'s items (the new deployment is live)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base}/config", timeout=10)
            if r.status_code == 200:
                last = r.json()
                if all(last.get(k) == v for k, v in want.items()):
                    return expect_ok(httpx.get(f"{base}/health", timeout=10))
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
                             timeout=60))  # fmt: skip
    assert v["score"] == pytest.approx(1.0, abs=1e-4) and v["same"] is True
    ann = expect_ok(
        httpx.post(f"{base}/speakers", json={"name": "Ann", "audio": [b64(a), b64(b)]}, timeout=60)
    )

    # a changed argument redeploys the app: new replicas, same database file
    r = ray_head.serve("deploy", str(deploy_config(tmp_path, port, top_k=3)),
                       "--address", ray_head.address, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    health = wait_healthy(base, {"top_k": 3})
    assert health["num_speakers"] == 1
    speakers = expect_ok(httpx.get(f"{base}/speakers", timeout=30))["speakers"]
    assert [(s["id"], s["name"]) for s in speakers] == [(ann["id"], "Ann")]
    assert (tmp_path / "state" / "speakers.db").is_file()

    r = ray_head.serve("shutdown", "--yes", "--address", ray_head.address, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

"""``python -m serve --checkpoint CKPT [--tse CKPT] [--codec NAME=CKPT] [--classify CKPT]``.

Runs the voxray app: the speaker service (``--checkpoint``, the embedding model that /diarize
also uses), plus target speaker extraction (tse), codecs and sound classification (classify)
when their checkpoints are given, each model in its own autoscaled deployment.

Starts (or joins, with ``RAY_ADDRESS``) a Ray cluster, runs ``serve.app:build_app`` and blocks
until Ctrl-C. For a long-lived deployment use ``serve deploy serve/serve_config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from typing import Any

import yaml

from serve.auth import is_loopback
from serve.schemas import AppArgs

log = logging.getLogger("serve")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="voxray checkpoint (.pt) or .onnx file")
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto: ONNX Runtime on CPU replicas (exported once beside the checkpoint), torch "
        "on GPU replicas; torch or onnx forces one",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH[:onnx]",
        help="another model to switch to at runtime (POST /config {'model': NAME}); repeatable",
    )
    p.add_argument("--db", default="speakers.db", help="SQLite enrollment database")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; the default is loopback only, 0.0.0.0 exposes the service",
    )
    p.add_argument(
        "--api-keys-file",
        help="API keys (python -m serve.keys add NAME --scopes ... --file F); or $VOXRAY_API_KEYS",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="development only: no API keys; refused unless --host is loopback",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="operating point of verify/identify; default: the model's calibration record "
        "(CHECKPOINT.calibration.json, written by ray_jobs.evaluate), else 0.5",
    )
    p.add_argument(
        "--operating-point",
        choices=["eer", "min_dcf_0.01", "min_dcf_0.05"],
        default="eer",
        help="which calibrated threshold to use",
    )
    p.add_argument(
        "--cohort",
        help="AS-norm cohort for --checkpoint (speakers.parquet of ray_jobs.extract, or .npy)",
    )
    p.add_argument("--asnorm-topk", type=int, default=100)
    p.add_argument(
        "--allow-root", action="append", default=[], help="folder clients may name paths in"
    )
    p.add_argument("--tse", help="TSE checkpoint: enables POST /extract_target")
    p.add_argument(
        "--codec",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="codec checkpoint served as NAME by /codec/encode and /codec/decode; repeatable",
    )
    p.add_argument(
        "--classify",
        "--classifier",  # the old spelling, still accepted
        dest="classify",
        help="sound classifier checkpoint: enables POST /classify",
    )
    p.add_argument(
        "--diarization-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="DiarizationConfig override, e.g. clustering.threshold=0.6 (from tune.sweep)",
    )
    p.add_argument("--no-diarization", action="store_true", help="do not deploy /diarize")
    p.add_argument("--max-replicas", type=int, default=2, help="embedding-model replicas")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster")
    ns = p.parse_args(argv)
    if ns.no_auth and not is_loopback(ns.host):
        p.error(f"--no-auth is for loopback only; with --host {ns.host} create API keys")

    def pairs(items: list[str], flag: str, form: str) -> list[tuple[str, str]]:
        out = []
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key or not value:
                p.error(f"{flag} {item!r}: expected {form}")
            out.append((key, value))
        return out

    models = {
        name: {
            "path": path.removesuffix(":onnx"),
            "backend": "onnx" if path.endswith(":onnx") else "auto",
        }
        for name, path in pairs(ns.model, "--model", "NAME=PATH or NAME=PATH:onnx")
    }
    codecs = {name: {"checkpoint": path} for name, path in pairs(ns.codec, "--codec", "NAME=CKPT")}
    overrides = {
        key: yaml.safe_load(value)
        for key, value in pairs(ns.diarization_set, "--diarization-set", "KEY=VALUE")
    }
    args = {
        "checkpoint": ns.checkpoint,
        "diarization": {"enabled": not ns.no_diarization, "config": overrides},
        "tse": {"checkpoint": ns.tse} if ns.tse else None,
        "codecs": codecs,
        "classify": {"checkpoint": ns.classify} if ns.classify else None,
        "backend": ns.backend,
        "models": models,
        "db": ns.db,
        "threshold": ns.threshold,
        "operating_point": ns.operating_point,
        "cohort": ns.cohort,
        "asnorm_topk": ns.asnorm_topk,
        "allowed_roots": ns.allow_root,
        "api_keys_file": ns.api_keys_file,
        "auth": "disabled" if ns.no_auth else "keys",
        "autoscaling": {"min_replicas": 1, "max_replicas": ns.max_replicas},
    }
    return ns, args


def app_cpu_request(cfg: AppArgs) -> float:
    """CPUs the app's deployments ask for at their initial replica counts."""
    need = cfg.ingress_num_cpus + cfg.model_num_cpus * max(1, cfg.autoscaling.min_replicas)
    if cfg.diarization.enabled:
        need += cfg.diarization.num_cpus * max(1, cfg.diarization.autoscaling.min_replicas)
    for p in cfg.product_models().values():
        need += p.num_cpus * max(1, p.autoscaling.min_replicas)
    return need


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ns, args = parse_args(argv)
    from ray import serve

    from datasets.ray_data import init_ray
    from serve.app import build_app

    app = build_app(args)  # validates paths and args before starting anything
    num_cpus = ns.num_cpus
    if num_cpus is None and not os.environ.get("RAY_ADDRESS"):
        # A local cluster must be able to place every deployment's first replica, or requests
        # to an unplaced one wait forever: Ray CPUs are logical, so give it at least that many.
        need = app_cpu_request(AppArgs.model_validate(args))
        num_cpus = max(os.cpu_count() or 1, math.ceil(need))
        log.info("local Ray cluster with %d logical CPUs (the app asks for %.1f)", num_cpus, need)
    init_ray(num_cpus)
    serve.start(http_options={"host": ns.host, "port": ns.port})
    serve.run(app, name="voxray", route_prefix="/")
    log.info("voxray service on http://%s:%d (docs: /docs); Ctrl-C stops it", ns.host, ns.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()


if __name__ == "__main__":
    main()

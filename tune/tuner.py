"""The Tune run and the summary every sweep shares (training and diarization sweeps).

``tune/sweep.py`` (the CLI and training sweeps) and ``tune/diarization.py`` both run their
sweep here (``fit_sweep``), so neither imports the other's module for it (no import cycle).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray import tune

from datasets import storage
from ray_jobs.submission import run_name
from tune.spaces import to_param_space

log = logging.getLogger("tune.tuner")


def fit_sweep(
    trainable: Any,
    space: dict[str, Any],
    output: str | Path,
    *,
    kind: str,
    metric: str,
    mode: str,
    num_samples: int,
    max_concurrent: int,
    seed: int,
    label: str,
    scheduler: Any = None,
) -> dict[str, Any]:
    """The sweep every kind runs: seeded random/grid search over ``space``, Tune's results under
    ``<output>/tune``; returns the summary, also written to ``<output>/sweep.json``. The search
    algorithm carries the concurrency limit: Tune applies ``max_concurrent_trials`` only to the
    search algorithms it builds itself. ``output`` is a folder or a URI (``s3://...``)."""
    results_fs, results_path = storage.resolve(storage.join(output, "tune"))
    tuner = tune.Tuner(
        trainable,
        param_space=to_param_space(space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=num_samples,
            scheduler=scheduler,
            search_alg=tune.search.BasicVariantGenerator(
                random_state=seed, max_concurrent=max_concurrent
            ),
        ),
        run_config=tune.RunConfig(
            name=run_name(f"sweep-{kind}", label),
            storage_path=results_path,
            storage_filesystem=results_fs,
        ),
    )
    return summarize(tuner.fit(), metric, mode, output, kind=kind)


def summarize(
    results: Any, metric: str, mode: str, output: str | Path, kind: str
) -> dict[str, Any]:
    trials = []
    for r in results:
        m = dict(r.metrics or {})
        trials.append(
            {
                "config": dict(r.config or {}),
                metric: m.get(metric),
                "iterations": m.get("training_iteration"),
                "error": str(r.error) if r.error else None,
                # the last epoch checkpoint (also for trials ASHA stopped early)
                "checkpoint": m.get("checkpoint_path"),
                "path": r.path,
            }
        )
    scored = [t for t in trials if t[metric] is not None and not t["error"]]
    if not scored:
        raise RuntimeError(f"no trial reported {metric!r}; see {storage.join(output, 'tune')}")
    best = (min if mode == "min" else max)(scored, key=lambda t: t[metric])
    summary = {"kind": kind, "metric": metric, "mode": mode, "best": best, "trials": trials}
    storage.write_text(
        storage.join(output, "sweep.json"), json.dumps(summary, indent=2, default=str)
    )
    log.info("best %s = %s with %s", metric, best[metric], best["config"])
    return summary

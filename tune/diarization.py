"""Diarization sweeps: tune clustering and window settings on a dev set with reference RTTMs.

Called by ``python -m tune.sweep diarization`` (see ``tune/sweep.py``). Nothing is retrained:
the speaker-embedding checkpoint is fixed, and each Tune trial builds a
``models.pipelines.diarize.DiarizationConfig`` from the base ``--set`` overrides plus its
sampled dotted keys (``clustering.threshold``, ``window_seconds``...), diarizes every dev file
and reports ``der`` (the total over files from summed seconds, as ``ray_jobs.diarize`` reports
it) with ``missed``, ``false_alarm`` and ``confusion``. Tuning the clustering threshold of a
fixed embedder on a dev set is the usual recipe of clustering-based systems (e.g. pyannote's
``pipeline.optimize``, Bredin 2023, "pyannote.audio 2.1 speaker diarization pipeline").

The audio is decoded once in the driver and shipped to the trials through the object store
(``tune.with_parameters``); when no ``vad.*`` key is in the space the VAD regions are computed
once too and every trial reuses them. Outputs: ``<output>/sweep.json`` (``tune.tuner.summarize``)
and ``<output>/best_config.yaml`` / ``best_config.json``: the dotted overrides of the best trial,
ready for ``serve`` ``diarization.config`` and ``ray_jobs.diarize --set``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from ray import tune

from datasets import storage
from datasets.audio import load_audio
from datasets.ray_data import init_ray
from models.calibration import eer_threshold, read_calibration
from models.checkpoint import read_checkpoint
from models.config import ConfigError
from models.pipelines.diarize import Diarizer, diarization_config
from models.pipelines.speaker import SpeakerEmbedder
from models.pipelines.vad import SileroVAD
from ray_jobs.cli import existing_checkpoint
from ray_jobs.diarize.core import der_report, list_inputs, load_references
from ray_jobs.storage import check_output
from tune.spaces import example_values
from tune.tuner import fit_sweep

log = logging.getLogger("tune.diarization")


class _FixedVAD:
    """Precomputed speech regions of one file (VAD keys are not being tuned)."""

    def __init__(self, regions: list[tuple[float, float]]) -> None:
        self.regions = regions

    def __call__(self, wav: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
        return list(self.regions)


def _overrides_dict(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["k=v"]`` (values parsed as YAML) -> flat ``{dotted: value}``."""
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_dev_set(
    dev: str | Path, reference_rttm: str | Path, sample_rate: int
) -> list[dict[str, Any]]:
    """Dev audio (folder, file or list) + references -> ``[{uri, wav, reference}]``.

    Every dev file needs a reference (an unscored file would only cost time)."""
    refs = load_references(reference_rttm)
    rows = list_inputs(dev)
    missing = [r["uri"] for r in rows if r["uri"] not in refs]
    if missing:
        raise ValueError(f"no reference turns in {reference_rttm} for dev files {missing}")
    out = []
    for r in rows:
        wav, _ = load_audio(r["path"], target_sr=sample_rate)
        out.append({"uri": r["uri"], "wav": wav, "reference": refs[r["uri"]]})
    return out


def evaluate_config(
    embedder: Any,
    files: list[dict[str, Any]],
    overrides: dict[str, Any],
    *,
    collar: float,
    regions: dict[str, list[tuple[float, float]]] | None = None,
    verification_threshold: float | None = None,
) -> dict[str, float]:
    """Diarize ``files`` with the config of ``overrides``; total DER parts over the files.
    ``verification_threshold``: the checkpoint's calibrated EER threshold (the clustering
    threshold where the space and overrides leave ``clustering.threshold`` unset)."""
    cfg = diarization_config(overrides)
    vad = SileroVAD(cfg.vad)
    hyps, refs = {}, {}
    for f in files:
        v = _FixedVAD(regions[f["uri"]]) if regions is not None else vad
        res = Diarizer(embedder, v, cfg, verification_threshold)(f["wav"], embedder.sample_rate)
        hyps[f["uri"]] = [(s.start, s.end, s.speaker) for s in res.segments]
        refs[f["uri"]] = f["reference"]
    total = der_report(hyps, refs, collar=collar)["total"]
    return {k: float(total[k]) for k in ("der", "missed", "false_alarm", "confusion")}


def diarization_trial(
    config: dict[str, Any],
    *,
    checkpoint: dict[str, Any],
    files: list[dict[str, Any]],
    base: dict[str, Any],
    collar: float,
    regions: dict[str, list[tuple[float, float]]] | None,
    verification_threshold: float | None = None,
) -> None:
    """One Tune trial: base overrides + the sampled keys -> ``tune.report`` of the DER parts."""
    import torch

    torch.set_num_threads(1)
    embedder = SpeakerEmbedder.from_checkpoint_dict(checkpoint)
    metrics = evaluate_config(
        embedder,
        files,
        {**base, **config},
        collar=collar,
        regions=regions,
        verification_threshold=verification_threshold,
    )
    tune.report(metrics)


def run_diarization_sweep(
    *,
    checkpoint: str | Path,
    dev: str | Path,
    reference_rttm: str | Path,
    space: dict[str, dict[str, Any]],
    output: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    collar: float = 0.25,
    num_samples: int = 8,
    metric: str = "der",
    mode: str = "min",
    max_concurrent: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Sweep ``space`` (``{dotted key: sampler spec}``) on the dev set; returns the summary
    (``kind``, ``metric``, ``mode``, ``best``, ``trials``) also written to ``sweep.json``."""
    check_output(output)  # a folder or a URI (s3://...); local on a multi-node cluster: refused
    base = _overrides_dict(overrides)
    # every key must fit DiarizationConfig: fail in the driver, before any trial starts
    try:
        diarization_config({**base, **example_values(space)})
    except ConfigError as exc:
        raise ConfigError(f"search space does not fit DiarizationConfig: {exc}") from exc
    if metric not in ("der", "missed", "false_alarm", "confusion"):
        raise ValueError(f"metric {metric!r}: use der, missed, false_alarm or confusion")
    path = existing_checkpoint(checkpoint)  # a file, a URI or a published model by name
    ckpt = read_checkpoint(path)
    probe = SpeakerEmbedder.from_checkpoint(path)
    sample_rate = probe.sample_rate
    t_eer = eer_threshold(read_calibration(path, probe.model_id))
    files = load_dev_set(dev, reference_rttm, sample_rate)
    regions = None
    if not any(k == "vad" or k.startswith("vad.") for k in space):
        vad = SileroVAD(diarization_config(base).vad)
        regions = {f["uri"]: vad(f["wav"], sample_rate) for f in files}
    init_ray()
    trainable = tune.with_resources(
        tune.with_parameters(
            diarization_trial, checkpoint=ckpt, files=files, base=base, collar=collar,
            regions=regions, verification_threshold=t_eer,
        ),
        {"CPU": 1},
    )  # fmt: skip
    summary = fit_sweep(
        trainable,
        space,
        output,
        kind="diarization",
        label=Path(output).name or "output",
        metric=metric,
        mode=mode,
        num_samples=num_samples,
        max_concurrent=max_concurrent,
        seed=seed,
    )
    best = {**base, **summary["best"]["config"]}
    storage.write_text(
        storage.join(output, "best_config.yaml"), yaml.safe_dump(best, sort_keys=True)
    )
    storage.write_text(
        storage.join(output, "best_config.json"), json.dumps(best, indent=2, sort_keys=True)
    )
    return summary

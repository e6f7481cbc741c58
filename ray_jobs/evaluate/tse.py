"""Evaluate a target-speaker-extraction checkpoint on held-out dynamic mixtures.

    python -m ray_jobs.evaluate --checkpoint tse.pt --data-root SPEECH [--noise DIR] [--rir DIR]
        [--num-mixes 100] [--seed 0] [--segment-seconds 4] [--max-speakers N] [--json]

Mixtures are built by ``datasets.mixing.DynamicMixer`` over the speakers of ``--data-root``
(any layout ``datasets.manifests.scan_source`` reads; decoded at the model's rate, 48 kHz, with
``datasets.audio.load_audio`` into a ``MemoryPool``), with the recipe of training
(``MixConfig``: interferers, SIR/SNR, RIRs, target-absent mixtures) and the same held-out seed
stream as ``ray_jobs/data_tse.py`` (``make_eval_set``). Each mixture goes through
``TargetExtractor`` (reference encoded once, chunked long-file inference).

The protocol follows the TSE literature's objective evaluation (SpeakerBeam, Zmolikova et al.
2019, and USEF-TSE, Zeng et al. 2024, arXiv 2409.02615: SI-SDR / SI-SDRi, PESQ, STOI on
target-present mixtures) plus the target-absent case of Borsdorf et al. 2021 ("Universal speaker
extraction in the presence and absence of target speakers", Interspeech): how many dB of the
mixture the extractor removes when the enrolled speaker is not there. PESQ-WB (ITU-T P.862.2)
and STOI (Taal et al. 2011) are computed on 16 kHz down-sampled copies, for the extracted signal
and, as the baseline it should beat, for the unprocessed mixture.

:func:`evaluate_samples` is Ray-free; the training job (``ray_jobs/data_tse.py``) calls it on its
held-out set at the end of a run. Output: a readable report, or with ``--json`` one JSON object
on stdout (logs on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio, resample
from datasets.manifests import scan_source
from datasets.mixing import DynamicMixer, MemoryPool, MixConfig, MixSample, make_eval_set
from models.metrics import absent_suppression_db, pesq_wb, si_sdr, si_sdr_improvement, stoi
from models.pipelines.extract_target import TargetExtractor
from models.pipelines.inputs import AudioInputError
from ray_jobs.cli import configure_cli_logging

log = logging.getLogger("ray_jobs.evaluate.tse")

METRIC_SR = 16000  # PESQ-WB and STOI run at 16 kHz
_MEANS = ("si_sdr", "si_sdri", "pesq", "stoi", "mix_si_sdr", "mix_pesq", "mix_stoi")


def _mean(values: list[float]) -> float | None:
    """Mean over finite values (PESQ gives NaN on unscorable pairs); None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_samples(
    extractor: TargetExtractor,
    samples: list[MixSample],
    *,
    sample_rate: int | None = None,
    per_sample: bool = False,
) -> dict[str, Any]:
    """Extract the target of every mixture and score it.

    ``samples``: ``MixSample`` at ``sample_rate`` Hz (default: the extractor's, 48 kHz).
    Returns ``num_mixes``, ``num_present``, ``num_absent``; over target-present mixtures the
    means of ``si_sdr``, ``si_sdri`` (dB), ``pesq`` (MOS-LQO), ``stoi`` ([0, 1]) and the
    unprocessed mixture's ``mix_si_sdr``, ``mix_pesq``, ``mix_stoi``; over target-absent ones
    ``absent_suppression_db`` (higher = more of the mixture removed). A mean with no samples is
    ``None``. ``pesq_failed`` counts pairs PESQ could not score (left out of the mean);
    ``real_time_factor`` is extraction time over audio time. ``per_sample=True`` adds
    ``samples``: one dict of metrics per mixture.
    """
    sr = int(sample_rate or extractor.sample_rate)
    sums: dict[str, list[float]] = {k: [] for k in _MEANS}
    absent: list[float] = []
    rows: list[dict[str, Any]] = []
    pesq_failed = 0
    busy = audio = 0.0
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        est = extractor(s.mix, sr, s.ref, sr)
        busy += time.perf_counter() - t0
        audio += s.mix.shape[-1] / sr
        if est.shape[0] != s.mix.shape[0]:  # resampling rounding when sr != model rate
            est = resample(est, extractor.sample_rate, sr)[: s.mix.shape[0]]
        row: dict[str, Any] = {"index": i, "present": bool(s.present)}
        if s.present:
            est16 = resample(est, sr, METRIC_SR)
            mix16 = resample(s.mix, sr, METRIC_SR)
            tgt16 = resample(s.target, sr, METRIC_SR)
            row.update(
                si_sdr=si_sdr(est, s.target),
                si_sdri=si_sdr_improvement(est, s.mix, s.target),
                mix_si_sdr=si_sdr(s.mix, s.target),
                pesq=pesq_wb(est16, tgt16, METRIC_SR),
                mix_pesq=pesq_wb(mix16, tgt16, METRIC_SR),
                stoi=stoi(est16, tgt16, METRIC_SR),
                mix_stoi=stoi(mix16, tgt16, METRIC_SR),
            )
            pesq_failed += int(not math.isfinite(row["pesq"]))
            for k in _MEANS:
                sums[k].append(row[k])
        else:
            row["absent_suppression_db"] = absent_suppression_db(est, s.mix)
            absent.append(row["absent_suppression_db"])
        rows.append(row)
    out: dict[str, Any] = {
        "num_mixes": len(samples),
        "num_present": len(sums["si_sdr"]),
        "num_absent": len(absent),
        **{k: _mean(v) for k, v in sums.items()},
        "absent_suppression_db": _mean(absent),
        "pesq_failed": pesq_failed,
        "sample_rate": sr,
        "real_time_factor": busy / audio if audio > 0 else None,
    }
    if per_sample:
        out["samples"] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate",
        description="Evaluate a TSE checkpoint: SI-SDR(i), PESQ, STOI and target-absent "
        "suppression on seeded dynamic mixtures of a held-out speech tree.",
    )
    p.add_argument("--checkpoint", required=True, help="a voxray TSE checkpoint (.pt)")
    p.add_argument("--data-root", required=True, help="speech of held-out speakers (a tree)")
    p.add_argument("--layout", default="auto", help="tree layout or file-name pattern")
    p.add_argument("--noise", default="", help="noise folder or packed manifest (default: none)")
    p.add_argument("--rir", default="", help="RIR folder or packed manifest (default: dry)")
    p.add_argument("--num-mixes", type=int, default=100, help="number of mixtures")
    p.add_argument("--seed", type=int, default=0, help="mixing seed (held-out stream)")
    p.add_argument("--segment-seconds", type=float, default=4.0, help="mixture length")
    p.add_argument("--max-interferers", type=int, default=3, help="other speakers per mix")
    p.add_argument(
        "--target-absent-prob", type=float, default=0.2, help="share of target-absent mixes"
    )
    p.add_argument(
        "--max-speakers", type=int, default=0, help="use at most this many speakers (0: all)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--per-sample", action="store_true", help="also list every mixture's metrics")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    return p


def load_pool(data_root: str, layout: str, sample_rate: int, max_speakers: int = 0) -> MemoryPool:
    """Speech of ``data_root`` decoded at ``sample_rate`` into a ``MemoryPool`` (by speaker)."""
    utts = scan_source(data_root, layout)
    if not utts:
        raise AudioError(f"{data_root}: no audio files found; point --data-root at speech")
    speakers = sorted({u.speaker for u in utts})
    if max_speakers > 0:
        speakers = speakers[:max_speakers]
    keep = set(speakers)
    data: dict[str, list[np.ndarray]] = {s: [] for s in speakers}
    for u in utts:
        if u.speaker in keep:
            data[u.speaker].append(load_audio(u.path, sample_rate)[0])
    log.info("loaded %d utterances of %d speakers", sum(map(len, data.values())), len(data))
    return MemoryPool(data, sample_rate=sample_rate)


def format_report(r: dict[str, Any]) -> str:
    def f(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.3f}{unit}"

    return "\n".join(
        [
            f"TSE evaluation of {r.get('checkpoint', '?')} on {r.get('data_root', '?')}",
            f"  mixtures: {r['num_mixes']} ({r['num_present']} target-present, "
            f"{r['num_absent']} target-absent)",
            f"  SI-SDR:   {f(r['si_sdr'], ' dB')} (mixture {f(r['mix_si_sdr'], ' dB')})",
            f"  SI-SDRi:  {f(r['si_sdri'], ' dB')}",
            f"  PESQ-WB:  {f(r['pesq'])} (mixture {f(r['mix_pesq'])})",
            f"  STOI:     {f(r['stoi'])} (mixture {f(r['mix_stoi'])})",
            f"  target-absent suppression: {f(r['absent_suppression_db'], ' dB')}",
            f"  real-time factor: {f(r['real_time_factor'])}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        if args.num_mixes < 1:
            raise ValueError(f"--num-mixes must be >= 1, got {args.num_mixes}")
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        if not Path(args.data_root.split(",")[0].partition("@")[0]).exists():
            raise FileNotFoundError(f"--data-root {args.data_root} does not exist")
        extractor = TargetExtractor.from_checkpoint(ckpt, device=args.device)
        sr = extractor.sample_rate
        cfg = MixConfig(
            sample_rate=sr,
            segment_seconds=args.segment_seconds,
            ref_seconds=args.segment_seconds,
            max_interferers=args.max_interferers,
            min_interferers=min(1, args.max_interferers),
            target_absent_prob=args.target_absent_prob,
        )
        from datasets.augment import load_bank

        mixer = DynamicMixer(
            cfg,
            load_pool(args.data_root, args.layout, sr, args.max_speakers),
            load_bank(args.noise, sr) if args.noise else [],
            load_bank(args.rir, sr) if args.rir else [],
        )
        samples = make_eval_set(mixer, args.num_mixes, seed=args.seed)
        log.info("evaluating %s on %d mixtures", ckpt, len(samples))
        result = evaluate_samples(extractor, samples, per_sample=args.per_sample)
    except (FileNotFoundError, ValueError, KeyError, AudioInputError) as exc:
        # ValueError covers CheckpointError, ManifestError, AudioError, MixingError, ConfigError
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return 2
    result["checkpoint"] = str(args.checkpoint)
    result["data_root"] = str(args.data_root)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_report(result))
    return 0

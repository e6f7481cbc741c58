"""Evaluate a target-speaker-extraction checkpoint on held-out dynamic mixtures (the CLI of
``ray_jobs/evaluate/tse.py``).

    python -m ray_jobs.evaluate --checkpoint tse.pt --data-root SPEECH [--noise DIR] [--rir DIR]
        [--num-mixes 100] [--seed 0] [--segment-seconds 4] [--max-speakers N] [--json] \
        [--report DIR [--report-mixes 4]]

Output: a readable report, or with ``--json`` one JSON object on stdout (logs on stderr).
``--report DIR`` writes a listening page there (``index.html``: mixture, extracted, clean target
and enrollment of the first mixtures, with players, spectrograms and metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets.banks import open_bank
from datasets.mixing import DynamicMixer, make_eval_set
from datasets.mixing_config import MixConfig
from models.pipelines.tse import TargetExtractor
from ray_jobs.cli import USER_ERRORS, configure_cli_logging, existing_checkpoint, user_error
from ray_jobs.evaluate.tse import evaluate_samples, load_pool, write_listening_report

log = logging.getLogger("ray_jobs.evaluate.cli.tse")


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
    p.add_argument("--report", help="write a listening page (index.html) of a few mixtures here")
    p.add_argument("--report-mixes", type=int, default=4, help="mixtures on the listening page")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    return p


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
        ckpt = existing_checkpoint(args.checkpoint)
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
        mixer = DynamicMixer(
            cfg,
            load_pool(args.data_root, args.layout, sr, args.max_speakers),
            open_bank(args.noise, sr) if args.noise else None,
            open_bank(args.rir, sr) if args.rir else None,
        )
        samples = make_eval_set(mixer, args.num_mixes, seed=args.seed)
        log.info("evaluating %s on %d mixtures", ckpt, len(samples))
        keep = max(0, args.report_mixes) if args.report else 0
        result = evaluate_samples(
            extractor, samples, per_sample=args.per_sample, keep_estimates=keep
        )
        if args.report:
            page = write_listening_report(
                args.report, samples, result, title=f"TSE evaluation: {args.checkpoint}"
            )
            result["listening_page"] = str(page)
        result.pop("estimates", None)
        if not args.per_sample:
            result.pop("samples", None)
    except USER_ERRORS as exc:  # AudioError is a ValueError
        return user_error(exc)
    result["checkpoint"] = str(args.checkpoint)
    result["data_root"] = str(args.data_root)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_report(result))
    return 0

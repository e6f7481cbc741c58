"""``make demo``: the whole speaker-embedding path on a local Ray cluster, no data needed.

1. generate a synthetic multi-speaker corpus (``datasets.synth``), or use ``--data-root``;
2. pack it to HDF5 shards, holding out speakers for evaluation;
3. train a small CAM++ with Ray Data streaming into Ray Train;
4. score EER / minDCF on the held-out speakers and print where everything is.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from datasets.ray_env import REPO_ROOT
from ray_jobs.cli import configure_cli_logging, user_error
from ray_jobs.train.experiment import load_experiment
from ray_jobs.train.job import run_training

log = logging.getLogger("ray_jobs.demo.cli")
DEMO_CONFIG = REPO_ROOT / "ray_jobs" / "configs" / "tiny" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.demo", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", help="real audio tree (dataset/speaker/utt or speaker/utt)")
    p.add_argument("--output", default=str(REPO_ROOT / "runs" / "demo"))
    p.add_argument("--config", default=str(DEMO_CONFIG))
    p.add_argument("--speakers", type=int, default=48, help="synthetic speakers to generate")
    p.add_argument("--held-out", type=int, default=12, help="speakers kept for evaluation")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    configure_cli_logging()

    t0 = time.time()
    output = Path(args.output).resolve()
    if args.data_root:
        root = Path(args.data_root)
        if not root.exists():
            return user_error(f"{root} does not exist")
    else:
        from datasets.synth import generate_corpus

        root = output / "synth"
        log.info("generating a synthetic corpus of %d speakers in %s", args.speakers, root)
        generate_corpus(root, num_speakers=args.speakers, utts_per_speaker=8, seed=0)
    try:
        # --set may override the demo's own data settings, so they are defaults, not flags
        exp = load_experiment(
            args.config,
            args.overrides,
            defaults={"data.train": str(root), "data.val_speakers": args.held_out},
        )
        report = run_training(exp, output)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError is a ValueError
        return user_error(exc)
    ev = report.get("eval", {})
    lines = [
        "",
        "voxray demo report",
        "==================",
        f"data:        {root} ({report['train_speakers']} training speakers, "
        f"{report['train_utterances']} utterances)",
        f"model:       {report['model']} trained for {report['train_metrics'].get('epoch', 0):.0f} "
        f"epochs on {report['num_workers']} Ray Train worker(s), GPU: {report['used_gpu']}",
        f"held out:    {ev.get('val_speakers', 0)} unseen speakers, {ev.get('num_trials', 0)} trials",
        f"EER:         {100 * ev.get('eer', float('nan')):.2f} %",
        f"minDCF:      {ev.get('min_dcf_0.01', float('nan')):.3f} (p=0.01), "
        f"{ev.get('min_dcf_0.05', float('nan')):.3f} (p=0.05)",
        f"checkpoint:  {report['checkpoint']} (the best epoch: {_chosen(report)})",
        f"curves:      {output / 'curves.png'}, {output / 'metrics.csv'}, "
        f"TensorBoard {output / 'tensorboard'}",
        f"shards:      {output / 'shards'}",
        f"report:      {output / 'report.json'}",
        f"total time:  {time.time() - t0:.0f} s",
        "",
        "next: python -m ray_jobs.evaluate --checkpoint "
        f"{report['checkpoint']} --data-root <labelled tree> --json",
    ]
    print("\n".join(lines))
    return 0


def _chosen(report: dict) -> str:
    """``epoch 6 of 8, val_eer 12.50 %``: which epoch model.pt is, by which metric."""
    chosen = report.get("model_pt", {})
    text = f"epoch {chosen.get('epoch', 0)} of {report.get('epochs_run', 0)}"
    value = chosen.get(chosen.get("selected_by", ""))
    return text if value is None else f"{text}, {chosen['selected_by']} {100 * value:.2f} %"

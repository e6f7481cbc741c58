"""What a training run leaves to look at, and which epoch was best (Ray-free).

:class:`BestTracker` follows the task's validation metric (``Task.sweep_metric``: ``val_eer``,
``val_si_sdri``, ...) over epochs: the best epoch so far and the epochs since, which drive the
best checkpoint (``model.pt``) and early stopping (``train.early_stop_patience``). Every rank
tracks it (validation metrics are the same on every rank), so all stop at the same epoch.

:class:`Logbook` writes, on rank 0, in the run's output folder:

- ``tensorboard/``: TensorBoard events (tensorboardX): ``step/<metric>`` and ``step/lr`` every
  ``train.log_every`` optimizer steps (x = step), ``epoch/<metric>`` every epoch (x = epoch);
- ``metrics.csv``: one row per epoch: ``epoch, step, lr, train_*, val_*`` and bookkeeping;
- ``curves.png``: loss, learning rate and the validation metric against epochs (matplotlib's
  Agg canvas, no display or pyplot state needed).

A run resumed after a worker failure reopens them: rows up to the epoch it resumes from are
kept, later ones (written after that checkpoint) are dropped, and TensorBoard gets a new events
file in the same folder.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CSV_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
TB_DIR = "tensorboard"
LEADING = ("epoch", "step", "lr")  # first CSV columns; then train_*, val_*, the rest

# y-axis labels of the metrics tasks report (by the name after "train_"/"val_")
UNITS = {
    "loss": "loss (task objective)",
    "eer": "EER (fraction of trials)",
    "min_dcf": "minDCF (p_target 0.01, normalised cost)",
    "si_sdr": "SI-SDR (dB)",
    "si_sdri": "SI-SDRi over the mixture (dB)",
    "mel_distance": "multi-resolution mel distance (L1)",
    "acc": "accuracy (fraction correct)",
}


def metric_label(name: str) -> str:
    base = name.removeprefix("val_").removeprefix("train_")
    return f"{name}: {UNITS[base]}" if base in UNITS else name


def is_better(value: float, than: float | None, mode: str) -> bool:
    """``value`` strictly improves on ``than`` (None: nothing yet) under ``mode``."""
    if not math.isfinite(value):
        return False
    if than is None:
        return True
    return value < than if mode == "min" else value > than


@dataclass
class BestTracker:
    """The best epoch by ``metric`` (``mode`` ``"min"`` or ``"max"``); ties keep the earlier."""

    metric: str
    mode: str
    value: float | None = None
    epoch: int = 0  # epochs completed when the best was reported (1-based; 0 = none yet)
    step: int = 0
    since: int = 0  # epochs reported since the best one (what early stopping counts)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def update(self, metrics: dict[str, float]) -> bool:
        """Take one epoch's reported ``metrics`` (with ``epoch`` and ``step``); True when it is
        the new best. An epoch without the metric (no validation data) changes nothing."""
        value = metrics.get(self.metric)
        if value is None:
            return False
        if is_better(float(value), self.value, self.mode):
            self.value = float(value)
            self.epoch = int(metrics["epoch"])
            self.step = int(metrics["step"])
            self.since = 0
            return True
        self.since += 1
        return False

    def observe(self, metrics: dict[str, float], patience: int = 0) -> bool:
        """:meth:`update` with one epoch's ``metrics``, adding ``best_epoch`` and
        ``epochs_since_best`` to them once the metric is reported. True when ``patience`` > 0
        epochs in a row brought no new best (early stopping)."""
        if self.metric not in metrics:
            return False
        self.update(metrics)
        metrics.update(best_epoch=float(self.epoch), epochs_since_best=float(self.since))
        return patience > 0 and self.since >= patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and state.get("metric") == self.metric:
            self.value = state["value"]
            self.epoch, self.step, self.since = state["epoch"], state["step"], state["since"]

    def describe(self) -> str:
        if self.value is None:
            return f"no {self.metric} yet"
        return f"best {self.metric} {self.value:.4f} (epoch {self.epoch})"


def pick_best(reports: list[dict[str, Any]], metric: str, mode: str) -> int | None:
    """Index of the best of ``reports`` (epoch metrics) by ``metric``; ties: the earliest epoch.
    None when no report has a finite ``metric``."""
    best: int | None = None
    order = sorted(range(len(reports)), key=lambda i: float(reports[i].get("epoch", 0)))
    for i in order:
        value = reports[i].get(metric)
        if value is None:
            continue
        if is_better(float(value), None if best is None else reports[best][metric], mode):
            best = i
    return best


def _columns(rows: list[dict[str, float]]) -> list[str]:
    keys = {k for r in rows for k in r}
    rest = sorted(keys - set(LEADING))
    train = [k for k in rest if k.startswith("train_")]
    val = [k for k in rest if k.startswith("val_")]
    other = [k for k in rest if k not in train and k not in val]
    return [k for k in LEADING if k in keys] + train + val + other


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (empty cells left out)."""
    with Path(path).open(newline="") as fh:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(fh)
        ]


def _cell(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


class Logbook:
    """TensorBoard events, ``metrics.csv`` and ``curves.png`` under ``output_dir`` (module doc).

    ``start_epoch``: epochs already completed (a resumed run); ``metric``/``mode``: the task's
    validation metric, drawn with its best epoch marked.
    """

    def __init__(
        self, output_dir: str | os.PathLike, *, start_epoch: int, metric: str, mode: str
    ) -> None:
        from tensorboardX import SummaryWriter

        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metric, self.mode = metric, mode
        self.rows: list[dict[str, float]] = []
        csv_path = self.dir / CSV_NAME
        if csv_path.is_file():
            old = read_metrics_csv(csv_path)
            self.rows = [r for r in old if r.get("epoch", 0) <= start_epoch]
            if len(self.rows) < len(old):
                log.info(
                    "metrics.csv: dropped %d row(s) after epoch %d",
                    len(old) - len(self.rows),
                    start_epoch,
                )
        self.writer = SummaryWriter(logdir=str(self.dir / TB_DIR), flush_secs=30)

    def step(self, step: int, scalars: dict[str, float]) -> None:
        """Per-step scalars (``train_loss``, ``lr``, ...) at optimizer step ``step``."""
        for k, v in scalars.items():
            self.writer.add_scalar(f"step/{k}", float(v), step)

    def epoch(self, metrics: dict[str, float]) -> None:
        """One epoch's reported metrics (with ``epoch`` and ``step``): TensorBoard, a CSV row,
        the curves redrawn."""
        epoch = int(metrics["epoch"])
        for k, v in metrics.items():
            if k != "epoch":
                self.writer.add_scalar(f"epoch/{k}", float(v), epoch)
        self.writer.flush()
        self.rows.append({k: float(v) for k, v in metrics.items()})
        self._write_csv()
        try:
            plot_curves(self.rows, self.dir / CURVES_NAME, self.metric, self.mode)
        except (OSError, ValueError) as exc:  # a plot must never stop training
            log.warning("curves.png not drawn: %s", exc)

    def _write_csv(self) -> None:
        cols = _columns(self.rows)
        path = self.dir / CSV_NAME
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in self.rows:
                w.writerow([_cell(r[k]) if k in r else "" for k in cols])
        os.replace(tmp, path)

    def close(self) -> None:
        self.writer.close()


def plot_curves(
    rows: list[dict[str, float]], path: str | os.PathLike, metric: str, mode: str
) -> None:
    """Loss (train, and val when reported), learning rate and ``metric`` against epochs, with
    the best epoch marked, as a PNG written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)

    def series(key: str) -> tuple[list[float], list[float]]:
        pts = [(r["epoch"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        return [p[0] for p in pts], [p[1] for p in pts]

    for key in ("train_loss", "val_loss"):
        x, y = series(key)
        if x:
            ax_loss.plot(x, y, marker="o", label=key)
    ax_loss.set(title="loss", xlabel="epoch", ylabel=UNITS["loss"])
    if ax_loss.lines:
        ax_loss.legend()
    x, y = series("lr")
    if x:
        ax_lr.plot(x, y, marker="o")
        if all(v > 0 for v in y):
            ax_lr.set_yscale("log")
    ax_lr.set(
        title="learning rate (at epoch end)", xlabel="epoch", ylabel="learning rate (per step)"
    )
    x, y = series(metric)
    if x:
        ax_val.plot(x, y, marker="o", label=metric)
        best = pick_best([{"epoch": e, metric: v} for e, v in zip(x, y, strict=True)], metric, mode)
        if best is not None:
            ax_val.plot(
                [x[best]],
                [y[best]],
                marker="*",
                markersize=16,
                linestyle="none",
                label=f"best: epoch {int(x[best])}",
            )
        ax_val.legend()
        ax_val.set(title=f"validation ({mode} is best)")
    else:
        ax_val.set(title=f"no {metric} reported (no validation data)")
    ax_val.set(xlabel="epoch", ylabel=metric_label(metric))
    path = Path(path)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)

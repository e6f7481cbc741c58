"""The pictures the jobs write (Ray-free; matplotlib's Agg canvas, no pyplot, no display).

Every figure has axes with labels and units, and is written atomically (``<name>.tmp.png`` then
renamed), so a reader never sees half a PNG:

- :func:`det_png`: a DET curve (miss vs false-alarm probability on normal-deviate axes, as in
  NIST's DET plots, Martin et al. 1997, "The DET curve in assessment of detection task
  performance") with the EER and minDCF operating points marked (``ray_jobs.evaluate --report``);
- :func:`score_histogram_png`: target vs non-target score histograms with the thresholds;
- :func:`timeline_png`: a diarization timeline, reference and hypothesis rows per speaker
  (``ray_jobs.diarize``);
- :func:`spectrogram_png`: log-magnitude spectrograms, time (s) by frequency (kHz) with a dB
  colour bar, one panel per signal (the codec and TSE listening pages);
- :func:`confusion_png`: a classifier's confusion matrix (counts, rows = truth).

Operating points come from ``models.metrics`` (one definition of EER/minDCF).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics import error_rates, verification_metrics

# DET axis ticks (probabilities), as NIST's DETware draws them; the axes span 0.1 % .. 95 %,
# extended to the tick below (above) a marked operating point that falls outside.
_DET_TICKS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6,
              0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)  # fmt: skip


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (PNG) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    return path


def _probit(p: np.ndarray | float) -> np.ndarray:
    """Normal deviate of a probability, clipped away from 0 and 1 (which are infinitely far)."""
    from scipy.stats import norm

    return norm.ppf(np.clip(p, 1e-5, 1 - 1e-5))


def det_png(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
    p_target: float = 0.01,
) -> Path:
    """DET curve of ``scores`` (higher = same speaker) against boolean ``labels``, with the EER
    point and the minDCF (``p_target``) operating point marked; miss and false-alarm
    probabilities in % on normal-deviate axes."""
    m = verification_metrics(scores, labels)
    p_miss, p_fa, thr = error_rates(scores, labels)
    key = f"min_dcf_{p_target}"
    if key not in m:
        raise ValueError(f"p_target must be 0.01 or 0.05 (verification_metrics), got {p_target}")
    k = int(np.searchsorted(thr, m[f"{key}_threshold"]))  # the minDCF operating point
    fig = _figure(5.5, 5.2)
    ax = fig.subplots()
    ax.plot(_probit(p_fa), _probit(p_miss), color="C0", lw=1.8, label="DET")
    marked = [m["eer"], p_fa[k], p_miss[k]]
    lo = min([0.001] + [p for p in marked if p > 0])
    hi = max([0.95] + [p for p in marked if p < 1])
    lo = max([t for t in _DET_TICKS if t <= lo] or [_DET_TICKS[0]])
    hi = min([t for t in _DET_TICKS if t >= hi] or [_DET_TICKS[-1]])
    lim = _probit(np.array([lo, hi]))
    ax.plot(lim, lim, color="0.6", lw=0.8, ls="--", label="P_miss = P_fa")
    e = _probit(m["eer"])
    ax.plot([e], [e], "o", color="C3", ms=8, label=f"EER {100 * m['eer']:.2f} %")
    # a probability of 0 (no false alarm among finitely many trials) is infinitely far on
    # these axes: its point sits on the axis edge, and the legend gives the exact values
    edge = lambda p: _probit(min(max(p, lo), hi))  # noqa: E731
    ax.plot(
        [edge(p_fa[k])],
        [edge(p_miss[k])],
        "s",
        color="C2",
        ms=8,
        clip_on=False,
        label=f"minDCF(p={p_target:g}) {m[key]:.3f} "
        f"(P_fa {100 * p_fa[k]:.2g} %, P_miss {100 * p_miss[k]:.3g} %)",
    )
    ticks, names = [], []
    for t in _DET_TICKS:  # thin the ticks so that their labels never overlap
        z = float(_probit(t))
        if lo <= t <= hi and (not ticks or z - ticks[-1] > 0.3 * (lim[1] - lim[0]) / 6):
            ticks.append(z)
            names.append(f"{100 * t:g}")
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.grid(True, color="0.85")
    ax.set_xlabel("false-alarm probability (%)")
    ax.set_ylabel("miss probability (%)")
    ax.set_title(title or f"DET: {m['num_target']} target, {m['num_nontarget']} non-target trials")
    ax.legend(loc="best", fontsize=9)
    return save_figure(fig, path)


def score_histogram_png(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    path: str | os.PathLike,
    *,
    thresholds: Mapping[str, float] | None = None,
    xlabel: str = "cosine score",
    title: str = "",
) -> Path:
    """Target and non-target score histograms (densities, shared bins) with vertical lines at
    ``thresholds`` (``{name: score}``)."""
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels, dtype=bool)
    if s.shape != lab.shape or s.size == 0:
        raise ValueError(f"scores {s.shape} and labels {lab.shape} must be equal, non-empty")
    bins = np.linspace(s.min(), s.max() + 1e-9, min(60, max(10, s.size // 20)) + 1)
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    for sel, name, color in ((lab, "target", "C0"), (~lab, "non-target", "C1")):
        if sel.any():
            ax.hist(s[sel], bins=bins, density=True, alpha=0.55, color=color,
                    label=f"{name} ({int(sel.sum())})")  # fmt: skip
    for i, (name, t) in enumerate((thresholds or {}).items()):
        ax.axvline(t, color=f"C{i + 2}", ls="--", lw=1.2, label=f"{name} {t:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density (1 / score unit)")
    ax.set_title(title or "score distributions")
    ax.legend(fontsize=9)
    return save_figure(fig, path)


def timeline_png(
    hypothesis: Sequence[tuple[float, float, str]],
    path: str | os.PathLike,
    *,
    reference: Sequence[tuple[float, float, str]] | None = None,
    duration: float | None = None,
    title: str = "",
) -> Path:
    """Who speaks when: one row per speaker, hypothesis rows (``hyp: S0``...) and, when given,
    reference rows (``ref: spk``) above them; time in seconds."""
    rows: list[tuple[str, list[tuple[float, float]], str]] = []
    for name, turns, color in (("ref", reference, "C1"), ("hyp", hypothesis, "C0")):
        if turns is None:
            continue
        by_spk: dict[str, list[tuple[float, float]]] = {}
        for start, end, spk in turns:
            by_spk.setdefault(str(spk), []).append((float(start), float(end) - float(start)))
        rows += [(f"{name}: {spk}", by_spk[spk], color) for spk in sorted(by_spk)]
    end = max([s + d for _, spans, _ in rows for s, d in spans] + [duration or 0.0, 1e-3])
    fig = _figure(10, 1.2 + 0.38 * max(len(rows), 1))
    ax = fig.subplots()
    for i, (_, spans, color) in enumerate(reversed(rows)):
        ax.broken_barh(spans, (i - 0.4, 0.8), facecolors=color)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s)")
    ax.grid(True, axis="x", color="0.85")
    ax.set_title(title or "diarization")
    return save_figure(fig, path)


def spectrogram_db(
    wav: np.ndarray, sample_rate: int, n_fft: int | None = None, hop: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(T,)`` -> ``(db (F, frames) clipped to 80 dB below the max, times (s), freqs (Hz))``,
    a Hann-windowed STFT (``n_fft`` scaled with the rate: 32 ms windows, 8 ms hop by default)."""
    import torch

    n_fft = max(256, int(2 ** round(np.log2(0.032 * sample_rate)))) if n_fft is None else n_fft
    hop = hop or n_fft // 4
    x = torch.from_numpy(np.asarray(wav, dtype=np.float32).reshape(-1))
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec.clamp_min(1e-8))
    db = db.clamp_min(db.max() - 80).numpy()
    times = np.arange(db.shape[1]) * hop / sample_rate
    freqs = np.arange(db.shape[0]) * sample_rate / n_fft
    return db, times, freqs


def spectrogram_png(
    wavs: Mapping[str, np.ndarray], sample_rate: int, path: str | os.PathLike, *, title: str = ""
) -> Path:
    """One spectrogram panel per ``{label: (T,)}`` (shared time axis and colour scale): time
    (s) against frequency (kHz), colour in dB relative to full scale."""
    if not wavs:
        raise ValueError("spectrogram_png needs at least one signal")
    n_fft = max(256, int(2 ** round(np.log2(0.032 * sample_rate))))
    specs = {k: spectrogram_db(w, sample_rate, n_fft) for k, w in wavs.items()}
    vmax = max(float(d.max()) for d, _, _ in specs.values())
    fig = _figure(8, 0.6 + 2.0 * len(specs))
    axes = np.atleast_1d(fig.subplots(len(specs), 1, sharex=True, squeeze=False)[:, 0])
    image = None
    for ax, (label, (db, t, f)) in zip(axes, specs.items(), strict=True):
        image = ax.pcolormesh(t, f / 1e3, db, shading="auto", cmap="magma",
                              vmin=vmax - 80, vmax=vmax)  # fmt: skip
        ax.set_ylabel("frequency (kHz)")
        ax.set_title(label, fontsize=10, loc="left")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, ax=list(axes), label="magnitude (dB)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def confusion_png(
    confusion: Sequence[Sequence[int]] | np.ndarray,
    classes: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    keep_empty: bool = False,
) -> Path:
    """Confusion counts (rows = true class, columns = predicted) as a heat map with the count in
    each cell; classes with no clip and no prediction are left out unless ``keep_empty``."""
    c = np.asarray(confusion, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] != len(classes):
        raise ValueError(f"confusion {c.shape} must be square with one row per class")
    keep = np.arange(len(classes))
    if not keep_empty:
        keep = np.flatnonzero((c.sum(0) + c.sum(1)) > 0)
    c = c[np.ix_(keep, keep)]
    names = [str(classes[i]) for i in keep]
    size = 3.5 + 0.35 * len(names)
    fig = _figure(size + 1.2, size)
    ax = fig.subplots()
    image = ax.imshow(c, cmap="Blues", vmin=0)
    if len(names) <= 30:
        for i, j in zip(*np.nonzero(c), strict=True):
            ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if c[i, j] > c.max() / 2 else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    acc = np.trace(c) / c.sum() if c.sum() else float("nan")
    ax.set_title(title or f"confusion ({int(c.sum())} clips, accuracy {100 * acc:.1f} %)")
    from matplotlib.ticker import MaxNLocator

    fig.colorbar(image, ax=ax, label="clips", ticks=MaxNLocator(integer=True))
    return save_figure(fig, path)

"""Measurements behind ``ray_jobs.bench``: parameters, FLOPs and interleaved timings.

Ray-free and device-agnostic (``Settings.device``); ``ray_jobs.bench`` turns the rows into
BENCHMARKS.md. The timing scheme (warm-up, then the median of repeated runs, compared calls
interleaved with a rotating order) follows ``torch.utils.benchmark`` practice without its
adaptive auto-ranging, so that every compared call gets exactly the same number of rounds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.features import Fbank, FbankConfig, num_frames
from models.registry import build_model, get_entry, get_preset, list_models, list_presets

SAMPLE_RATE = 16000
BIG_BATCH = 16


@dataclass(frozen=True)
class Settings:
    quick: bool
    threads: int
    device: torch.device
    seconds: float = 3.0  # utterance length that is timed
    warmup: int = 1  # untimed calls per measured function before the rounds
    min_repeats: int = 3
    max_repeats: int = 15
    # Timed rounds per model are sized to about this many seconds: 8 s keeps a full run of ~15
    # presets near 5 minutes on 2 idle cores (the heavy ECAPA/ERes2Net ones get min_repeats).
    budget_s: float = 8.0

    @classmethod
    def make(cls, *, quick: bool, threads: int, device: torch.device) -> Settings:
        if quick:
            return cls(quick, threads, device, warmup=1, min_repeats=3, max_repeats=8, budget_s=1.0)
        return cls(quick, threads, device)


@dataclass(frozen=True)
class SpeakerRow:
    preset: str
    model_name: str
    params_m: float
    frames: int  # fbank frames of one utterance of Settings.seconds
    gflops_per_s_1s: float  # GFLOP per second of audio, counted on a 1-s input
    gflops_per_s_3s: float  # ... on a 3-s input
    b1_ms: float  # median ms for one utterance at batch 1
    b16_ms_total: float  # median ms for one batch of 16 utterances
    b16_speedup: float  # median over rounds of (b1 ms) / (b16 ms / 16)
    fbank_ratio: float  # median over rounds of (fbank ms, one utterance) / (b1 forward ms)
    repeats: int

    @property
    def b16_ms_per_utt(self) -> float:
        return self.b16_ms_total / BIG_BATCH


@dataclass(frozen=True)
class FbankRow:
    b1_ms: float
    b16_ms_per_utt: float
    repeats: int


def fmt(x: float) -> str:
    """About three significant digits, plain decimal where sensible (parsable by ``float``)."""
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def head_rule(head: str) -> str:
    """The Markdown separator row under a table header ``| a | b |``."""
    return "|" + "---|" * (head.count("|") - 1)


def speaker_targets(quick: bool) -> list[str]:
    """Speaker presets to measure: ``-tiny`` ones in quick mode, every other one otherwise.

    In full mode a model whose default config matches none of its presets is measured too,
    under its bare registry name.
    """
    names = []
    for name in list_presets():
        preset = get_preset(name)
        if get_entry(preset.model_name).family != "speaker":
            continue
        if name.endswith("-tiny") == quick:
            names.append(name)
    if not quick:
        for model in list_models("speaker"):
            default = get_entry(model).config_cls()
            if not any(get_preset(p).config == default for p in list_presets(model)):
                names.append(model)
    return names


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], object]], settings: Settings) -> dict[str, list[float]]:
    """Milliseconds per call for each of ``fns``, timed in the same rounds.

    Each function is warmed up ``settings.warmup`` times; the number of rounds is sized from the
    last warm-up round to ``settings.budget_s`` and clamped to ``[min_repeats, max_repeats]``.
    The order within a round rotates, so no function always runs right after the same other one.
    """
    dev = settings.device
    names = list(fns)

    def call(name: str) -> float:
        _sync(dev)
        start = time.perf_counter()
        fns[name]()
        _sync(dev)
        return 1000 * (time.perf_counter() - start)

    round_ms = 0.0
    for _ in range(max(1, settings.warmup)):
        round_ms = sum(call(n) for n in names)
    repeats = int(settings.budget_s * 1000 / max(round_ms, 1e-3))
    repeats = min(settings.max_repeats, max(settings.min_repeats, repeats))
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(call(name))
    return out


def warm_up_runtime(device: torch.device, seconds: float = 1.0) -> None:
    """Spin the intra-op thread pool and oneDNN up once, so the first model measured does not
    pay for their lazy initialisation."""
    x = torch.randn(8, 64, 300, device=device)
    conv1 = torch.nn.Conv1d(64, 64, 5, padding=2).to(device)
    conv2 = torch.nn.Conv2d(1, 16, 3, padding=1).to(device)
    deadline = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < deadline:
            conv1(x)
            conv2(x[:, None])
            x @ x.transpose(1, 2)
            _sync(device)


def count_gflops(model: torch.nn.Module, feats: torch.Tensor) -> float:
    """GFLOP of one forward of ``feats`` (matmul/conv/attention, 2 per multiply-accumulate)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(feats)
    return counter.get_total_flops() / 1e9


def _noise(batch: int, seconds: float, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    wav = 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE), generator=gen)  # (B, T) in [-1, 1]
    return wav.to(device)


def speaker_row(name: str, settings: Settings) -> SpeakerRow:
    """Measure one speaker preset (or bare model name): build, count, time."""
    dev = settings.device
    preset_model = get_preset(name).model_name if name in list_presets() else name
    model = build_model(name).eval().to(dev)
    feat_dim = getattr(model.cfg, "feat_dim", 80)
    fbank = Fbank(FbankConfig(num_mel_bins=feat_dim))
    params_m = sum(p.numel() for p in model.parameters()) / 1e6

    with torch.inference_mode():
        wav16 = _noise(BIG_BATCH, settings.seconds, dev)
        feats16 = fbank(wav16)  # (16, frames, feat_dim)
        feats1 = feats16[:1].clone()
        wav1 = wav16[:1].clone()
        feats_1s = fbank(_noise(1, 1.0, dev, seed=1))  # (1, frames_1s, feat_dim)
    gf_1s = count_gflops(model, feats_1s) / 1.0
    gf_3s = count_gflops(model, feats1) / settings.seconds

    with torch.inference_mode():
        times = interleaved(
            {
                "fbank": lambda: fbank(wav1),
                "b1": lambda: model(feats1),
                "b16": lambda: model(feats16),
            },
            settings,
        )
    fb, b1, b16 = times["fbank"], times["b1"], times["b16"]
    return SpeakerRow(
        preset=name,
        model_name=preset_model,
        params_m=params_m,
        frames=feats1.shape[1],
        gflops_per_s_1s=gf_1s,
        gflops_per_s_3s=gf_3s,
        b1_ms=statistics.median(b1),
        b16_ms_total=statistics.median(b16),
        b16_speedup=statistics.median(a / (b / BIG_BATCH) for a, b in zip(b1, b16, strict=True)),
        fbank_ratio=statistics.median(f / a for f, a in zip(fb, b1, strict=True)),
        repeats=len(b1),
    )


def fbank_row(settings: Settings) -> FbankRow:
    """Fbank alone: one utterance vs a batch of 16 (per utterance), interleaved."""
    dev = settings.device
    fbank = Fbank(FbankConfig())
    wav16 = _noise(BIG_BATCH, settings.seconds, dev)
    wav1 = wav16[:1].clone()
    assert num_frames(wav1.shape[-1]) > 0
    with torch.inference_mode():
        times = interleaved({"b1": lambda: fbank(wav1), "b16": lambda: fbank(wav16)}, settings)
    return FbankRow(
        b1_ms=statistics.median(times["b1"]),
        b16_ms_per_utt=statistics.median(times["b16"]) / BIG_BATCH,
        repeats=len(times["b1"]),
    )

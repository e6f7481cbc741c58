"""Benchmark section for the codec and classifier products (``make bench`` -> BENCHMARKS.md).

``codec_section(quick)`` returns Markdown: per TinyStream preset the parameters, bitrate,
encoder + quantizer ONNX sizes (FP32 / dynamic INT8, ``ray_jobs/export/codec.py``) and the
encode / decode real-time factors on this CPU (all presets timed side by side in one run, so
their ratios compare; absolute times are this machine's only); ACDNet vs Micro-ACDNet
parameters, FLOPs (``models/classify/flops.py``, the ACDNet paper's counting) and latency ratio;
Lyra v2 (``ray_jobs/evaluate/lyra.py``) real-time factor when ``ai_edge_litert`` imports.
Models have random weights: sizes and speeds do not depend on their values.
"""

from __future__ import annotations

import time

import numpy as np
import torch

CODEC_PRESETS = (
    "tinystream-ultra_tiny",
    "tinystream-tiny",
    "tinystream-small",
    "tinystream-medium",
    "tinystream-full",
)


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def codec_rows(quick: bool) -> list[dict]:
    """Params, bitrate and encode/decode RTF per preset (``seconds`` of noise, best of N)."""
    from models import build_model
    from models.pipelines.codec import CodecPipeline

    seconds, repeats = (1.0, 2) if quick else (5.0, 3)
    rng = np.random.default_rng(0)
    rows = []
    for preset in CODEC_PRESETS:
        torch.manual_seed(0)
        pipe = CodecPipeline(build_model(preset).eval(), model_id=preset)
        wav = (0.1 * rng.standard_normal(int(seconds * pipe.sample_rate))).astype(np.float32)
        enc = pipe.encode(wav, pipe.sample_rate)
        t_enc = _best_time(lambda p=pipe, w=wav: p.encode(w, p.sample_rate), repeats)
        t_dec = _best_time(lambda p=pipe, e=enc: p.decode(e), repeats)
        rows.append(
            {
                "preset": preset,
                "params": sum(p.numel() for p in pipe.model.parameters()),
                "kbps": pipe.bitrate() / 1e3,
                "encode_rtf": t_enc / seconds,
                "decode_rtf": t_dec / seconds,
            }
        )
    return rows


def classifier_rows(quick: bool) -> list[dict]:
    from models import build_model
    from models.classify.flops import count_flops

    rows = []
    for preset in ("acdnet", "micro-acdnet"):
        torch.manual_seed(0)
        model = build_model(preset).eval()
        x = torch.randn(1, model.cfg.input_length) * 0.1
        with torch.no_grad():
            latency = _best_time(lambda m=model, x=x: m(x), 3 if quick else 10)
        rows.append(
            {
                "preset": preset,
                "params": sum(p.numel() for p in model.parameters()),
                "flops": count_flops(model, x),
                "latency_s": latency,
            }
        )
    return rows


def lyra_rtf(quick: bool) -> float | None:
    from ray_jobs.evaluate.lyra import LyraCodec, lyra_available

    if not lyra_available():
        return None
    wav = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    t0 = time.perf_counter()
    LyraCodec().roundtrip(wav, 6.0)
    return time.perf_counter() - t0


def codec_section(quick: bool) -> str:
    """The Markdown section (see the module docstring)."""
    from ray_jobs.export.sizes import size_table

    sizes = {r.preset: r for r in size_table(CODEC_PRESETS + ("micro-acdnet", "acdnet"))}
    lines = [
        "## Codec and sound-event classifier",
        "",
        "Random weights; RTF = processing time / audio duration on this machine's CPU "
        "(presets timed side by side in one run: compare the ratios). ONNX = encoder + quantizer.",
        "",
        "| preset | params | kbps | ONNX FP32 (KB) | ONNX INT8 (KB) | encode RTF | decode RTF |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in codec_rows(quick):
        s = sizes[r["preset"]]
        lines.append(
            f"| {r['preset']} | {r['params']:,} | {r['kbps']:.2f} | {s.fp32_bytes / 1024:.0f} | "
            f"{s.int8_bytes / 1024:.0f} | {r['encode_rtf']:.4f} | {r['decode_rtf']:.4f} |"
        )
    rtf = lyra_rtf(quick)
    lines += [
        "",
        f"Lyra v2 (TFLite, 6 kbps, encode+decode) RTF on this machine: {rtf:.4f}"
        if rtf is not None
        else "Lyra v2: not measured (ai-edge-litert not installed; it is not a dependency).",
        "",
        "| classifier | params | FLOPs (MACs) | ONNX FP32 (KB) | ONNX INT8 (KB) | latency ratio |",
        "|---|---|---|---|---|---|",
    ]
    clf = classifier_rows(quick)
    base = clf[0]["latency_s"]
    for r in clf:
        s = sizes[r["preset"]]
        lines.append(
            f"| {r['preset']} | {r['params']:,} | {r['flops']:,} | {s.fp32_bytes / 1024:.0f} | "
            f"{s.int8_bytes / 1024:.0f} | {r['latency_s'] / base:.3f} |"
        )
    return "\n".join(lines) + "\n"

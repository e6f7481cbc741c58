"""Check voxray's 3D-Speaker-compatible speaker models against the reference implementation.

For every entry of ``shared/reference/3dspeaker_state_dicts.json`` this builds the reference class
from the installed ``speakerlab`` package (3D-Speaker's code, a dev dependency; or from a
3D-Speaker checkout given as ``reference_root``) with the entry's constructor arguments,
randomises its weights *and* BatchNorm running statistics under a fixed seed (so that a
mis-wired layer cannot hide behind identity-like defaults), copies its state dict into
``build_model("3dspeaker/<entry>")`` with ``strict=True`` and runs both in eval mode on the same
Kaldi fbank features of 3 s of synthetic speech-like audio. It reports the max abs difference of
the raw embeddings and the CPU time per 3-s utterance at batch 1 and batch 16 (median over
repeated runs, ours and the reference interleaved, with ``--threads`` intra-op threads; process
CPU time is reported because it is robust to other jobs sharing the machine, wall time is kept in
the JSON).

The command line (usage, output) is ``ray_jobs/compare_reference/cli.py``. Only the reference's
model modules are imported (they need nothing beyond torch). No Ray is involved; this lives in
``ray_jobs/`` because it is an operator command, not library code.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datasets.ray_env import REPO_ROOT
from models.features import Fbank, FbankConfig
from models.registry import build_model, list_presets

SAMPLE_RATE = 16000
SECONDS = 3.0


def default_json_path() -> Path:
    shared = os.environ.get("VOXRAY_SHARED")
    base = Path(shared) if shared else REPO_ROOT.parent / "shared"
    return base / "reference" / "3dspeaker_state_dicts.json"


def import_reference_class(reference_root: Path | None, dotted: str) -> type[nn.Module]:
    """``models.campplus.DTDNN.CAMPPlus`` (relative to ``speakerlab``) -> the class object, from
    the installed ``speakerlab`` (``reference_root=None``) or a 3D-Speaker checkout.

    The reference package is imported as ``speakerlab.models...``: its own ``models`` package
    must never be put on ``sys.path`` bare, where it would shadow voxray's ``models``.
    """
    if not dotted.startswith("speakerlab."):
        dotted = f"speakerlab.{dotted}"
    module_name, cls_name = dotted.rsplit(".", 1)
    if reference_root is None:
        try:
            return getattr(importlib.import_module(module_name), cls_name)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                "3D-Speaker's speakerlab is not installed (`uv sync` installs the dev group); "
                "or pass a checkout as reference_root / --reference-root"
            ) from exc
    if not (reference_root / "speakerlab" / "models").is_dir():
        raise FileNotFoundError(
            f"{reference_root} is not a 3D-Speaker checkout (no speakerlab/models inside)"
        )
    root = str(reference_root.resolve())
    if root not in sys.path:
        sys.path.append(root)
    return getattr(importlib.import_module(module_name), cls_name)


@torch.no_grad()
def randomise_(model: nn.Module, seed: int) -> None:
    """Perturb every parameter and BatchNorm running statistic reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            if module.affine:
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
    for name, param in model.named_parameters():
        if "batchnorm" in name or param.dim() == 1:
            continue
        # Keep each layer's init scale, add 10 % noise so no weight is left at a special value.
        param.add_(0.1 * param.std() * torch.randn(param.shape, generator=gen))


def speech_like(batch: int, seed: int, seconds: float = SECONDS) -> torch.Tensor:
    """``(batch, seconds * 16000)`` float32 in [-1, 1]: a gliding harmonic source plus
    coloured noise under a ~4 Hz syllabic envelope. Deterministic for a given seed."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    rows = []
    for _ in range(batch):
        f0 = 100 + 100 * torch.rand(1, generator=gen) + 20 * torch.sin(2 * math.pi * 0.7 * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / SAMPLE_RATE
        voiced = sum(torch.sin(k * phase) / k for k in range(1, 16))
        noise = torch.randn(n, generator=gen)
        noise = torch.cumsum(noise, 0)
        noise = (
            noise
            - torch.nn.functional.avg_pool1d(
                noise[None, None], 101, 1, 50, count_include_pad=False
            )[0, 0]
        )
        rate = 3 + 3 * torch.rand(1, generator=gen)
        env = 0.5 * (1 + torch.sin(2 * math.pi * rate * t + 6 * torch.rand(1, generator=gen)))
        x = env * (voiced + 0.3 * noise / noise.std())
        rows.append(x / x.abs().max() * 0.5)
    return torch.stack(rows).float()


def _time_ms(fn: Any, x: torch.Tensor) -> tuple[float, float]:
    """(process CPU ms, wall ms) of one call. CPU time is the headline number: on a shared
    machine it is far less sensitive than wall time to other processes competing for cores."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn(x)
    return 1000 * (time.process_time() - cpu), 1000 * (time.perf_counter() - wall)


def time_pair(ours: nn.Module, ref: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median CPU and wall ms per call for both models, interleaved (order alternates)."""
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "ref": []}
    with torch.inference_mode():
        ours(x), ref(x)  # warm-up (allocator, oneDNN primitive caches)
        for i in range(repeats):
            order = [("ours", ours), ("ref", ref)]
            for name, model in order if i % 2 == 0 else order[::-1]:
                runs[name].append(_time_ms(model, x))
    out = {}
    for name, samples in runs.items():
        out[f"cpu_ms_{name}"] = statistics.median(s[0] for s in samples)
        out[f"wall_ms_{name}"] = statistics.median(s[1] for s in samples)
    return out


def compare_entry(
    entry: str,
    spec: dict[str, Any],
    reference_root: Path | None,
    repeats: int,
    seed: int,
    batch: int = 16,
) -> dict[str, Any]:
    """Embedding difference (and, with ``repeats`` > 0, CPU time) of one entry, ours against
    the reference, on ``batch`` utterances of 3 s (timing needs ``batch`` 16)."""
    preset = f"3dspeaker/{entry}"
    if preset not in list_presets():
        return {"entry": entry, "status": f"skipped: preset {preset!r} is not registered yet"}
    ref_cls = import_reference_class(reference_root, spec["reference_class"])
    torch.manual_seed(seed)
    ref = ref_cls(**spec["constructor_args"])
    randomise_(ref, seed)
    ours = build_model(preset)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ours.eval()
    n_ours = sum(p.numel() for p in ours.parameters())

    fbank = Fbank(FbankConfig(sample_rate=SAMPLE_RATE))
    feats16 = fbank(speech_like(batch, seed))  # (batch, 298, 80)
    feats1 = feats16[:1].clone()
    with torch.inference_mode():
        e_ours = ours(feats16.clone())
        e_ref = ref(feats16.clone())
    diff = (e_ours - e_ref).abs().max().item()
    result = {
        "entry": entry,
        "status": "ok",
        "reference_class": spec["reference_class"],
        "num_parameters": n_ours,
        "num_parameters_ref": spec["num_parameters"],
        "frames": feats16.shape[1],
        "max_abs_diff": diff,
        "max_abs_ref": e_ref.abs().max().item(),
        "threads": torch.get_num_threads(),
    }
    if repeats <= 0:
        return result
    if batch != 16:
        raise ValueError("timing is per batch of 16 utterances: pass batch=16 with repeats > 0")

    b1 = time_pair(ours, ref, feats1, repeats)
    b16 = time_pair(ours, ref, feats16, max(3, repeats // 3))
    return {
        **result,
        # CPU ms per 3-s utterance (process time, median); wall-clock medians alongside.
        "b1_ms_ours": b1["cpu_ms_ours"],
        "b1_ms_ref": b1["cpu_ms_ref"],
        "b1_ratio": b1["cpu_ms_ours"] / b1["cpu_ms_ref"],
        "b1_wall_ms_ours": b1["wall_ms_ours"],
        "b1_wall_ms_ref": b1["wall_ms_ref"],
        "b16_ms_per_utt_ours": b16["cpu_ms_ours"] / 16,
        "b16_ms_per_utt_ref": b16["cpu_ms_ref"] / 16,
        "b16_ratio": b16["cpu_ms_ours"] / b16["cpu_ms_ref"],
        "b16_wall_ms_per_utt_ours": b16["wall_ms_ours"] / 16,
        "b16_wall_ms_per_utt_ref": b16["wall_ms_ref"] / 16,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    head = (
        "| entry | params | max abs diff (max abs emb) | b1 CPU ms ours / ref (ratio) "
        "| b16 CPU ms/utt ours / ref (ratio) |\n|---|---|---|---|---|"
    )
    lines = [head]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"| {r['entry']} | {r['status']} | | | |")
            continue
        lines.append(
            f"| {r['entry']} | {r['num_parameters']:,} | {r['max_abs_diff']:.2e} "
            f"({r['max_abs_ref']:.2f}) | {r['b1_ms_ours']:.1f} / {r['b1_ms_ref']:.1f} "
            f"({r['b1_ratio']:.2f}) | {r['b16_ms_per_utt_ours']:.1f} / "
            f"{r['b16_ms_per_utt_ref']:.1f} ({r['b16_ratio']:.2f}) |"
        )
    threads = {r["threads"] for r in results if r["status"] == "ok"}
    lines.append(
        f"\nCPU ms per 3-s utterance (process time, median of interleaved runs), "
        f"torch threads: {', '.join(map(str, sorted(threads)))}."
    )
    return "\n".join(lines)

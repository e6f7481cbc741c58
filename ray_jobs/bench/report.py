"""``make bench``: measure every registered speaker preset and write BENCHMARKS.md.

    uv run python -m ray_jobs.bench [--output BENCHMARKS.md] [--quick] [--families speaker]
                                    [--reference-root PATH] [--threads 2] [--device cpu]
                                    [--no-ray-data] [--no-service]

Per speaker preset (from ``models.registry.list_presets()``; ``-tiny`` presets only with
``--quick``, which measures nothing else so that it finishes in well under a minute): parameters,
GFLOPs per second of audio (``torch.utils.flop_counter.FlopCounterMode`` on 1 s and 3 s of fbank
input), milliseconds per 3-s utterance at batch 1 and batch 16, and the cost of the Kaldi fbank
front end (``models.features.Fbank``) next to a forward. Optional sections: the 3D-Speaker
reference comparison (``ray_jobs.compare_reference``, with ``--reference-root``), Ray Data
ingest throughput (``datasets.ray_data.benchmark_throughput``) and the speaker service's requests/s
and latency over HTTP (``serve.bench.benchmark_service``); each is omitted with a note when
its code or inputs are absent.

Timing follows the usual micro-benchmark practice (cf. ``torch.utils.benchmark``): warm-up runs
first, then the median of repeated runs; things that are compared (fbank, batch 1, batch 16) run
interleaved in the same rounds, so their ratios are measured side by side. Model measurement is
in ``ray_jobs.bench_models``; this file assembles the document. No Ray here except through the
Ray Data and Serve hooks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ray_jobs.bench.models import (
    FbankRow,
    Settings,
    SpeakerRow,
    fbank_row,
    fmt,
    speaker_row,
    speaker_targets,
    warm_up_runtime,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("speaker", "diarization", "tse", "codec")


# --- machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: torch.device) -> dict[str, str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    info = {
        "CPU": cpu_model(),
        "CPU cores (logical, usable by this process)": f"{os.cpu_count()}, {usable}",
        "torch intra-op threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "Python": platform.python_version(),
        "OS": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["GPU"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        # Other work on the machine is the main source of noise; say how busy it was.
        info["load average (1/5/15 min) at start"] = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return info


# --- sections -----------------------------------------------------------------------------------


def section_method(info: dict[str, str], settings: Settings, argv: Sequence[str]) -> str:
    dev = settings.device.type.upper()
    lines = [
        "## How it was measured",
        "",
        f"Command: `python -m ray_jobs.bench {' '.join(argv)}`".rstrip() + " "
        f"({'quick' if settings.quick else 'full'} mode), "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        "Machine:",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        "",
        "Method:",
        "",
        f"- `torch.set_num_threads({settings.threads})`; models in eval mode under "
        "`torch.inference_mode()`, float32.",
        f"- Input: {settings.seconds:g} s of 16 kHz noise -> `models.features.Fbank` (80-bin "
        "Kaldi fbank, 25 ms / 10 ms, CMN) -> the model. Batch 16 is 16 such utterances.",
        f"- Each measured call gets {settings.warmup} warm-up run(s), then the **median** of N "
        f"timed runs (N between {settings.min_repeats} and {settings.max_repeats}, sized to about "
        f"{settings.budget_s:g} s per model; the `runs` column gives N). Timers are "
        "`time.perf_counter`"
        + (" with `torch.cuda.synchronize()` around each call" if dev == "CUDA" else "")
        + ".",
        "- Things that are compared are timed **interleaved**: each round runs fbank (one "
        "utterance), the batch-1 forward and the batch-16 forward, rotating their order, so "
        "the ratios (`b16 speed-up`, `fbank / fwd`) are medians of per-round ratios measured "
        "side by side.",
        "- These machines are shared and noisy: the **ratios are the primary figures**; absolute "
        + (
            "CPU times are indicative only (expect +-20 % between runs)."
            if dev == "CPU"
            else "times are from the GPU machine named above."
        )
        + " Absolute GPU times are reported only from runs on a GPU machine (`--device cuda`).",
        "- GFLOPs: `torch.utils.flop_counter.FlopCounterMode` (counts matmul/convolution/attention "
        "as 2 x multiply-accumulates; elementwise ops, norms and pooling are not counted) on one "
        "1-s and one 3-s fbank input, divided by the audio duration. The two columns differ only "
        "where a model has a length-independent part (e.g. the pooling/embedding layers).",
        "- Parameters: all `nn.Parameter`s of the embedding model (no margin head).",
    ]
    return "\n".join(lines)


def section_speaker(rows: list[SpeakerRow], settings: Settings) -> str:
    dev = "CPU" if settings.device.type == "cpu" else "GPU"
    head = (
        f"| preset | model | params (M) | GFLOP per s audio (1-s input) "
        f"| GFLOP per s audio (3-s input) | {dev} ms/utt b1 | {dev} ms/utt b16 "
        f"| {dev} ms total b16 | b16 speed-up | fbank / fwd b1 | runs |"
    )
    lines = [
        "## Speaker embedding models",
        "",
        f"One {settings.seconds:g}-s utterance = {rows[0].frames if rows else '?'} fbank frames. "
        "`b16 speed-up` = (ms/utt at batch 1) / (ms/utt at batch 16); `fbank / fwd b1` = fbank "
        "time for one utterance / batch-1 forward time (both per-round medians).",
        "",
        head,
        head_rule(head),
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.model_name} | {fmt(r.params_m)} | {fmt(r.gflops_per_s_1s)} "
            f"| {fmt(r.gflops_per_s_3s)} | {fmt(r.b1_ms)} | {fmt(r.b16_ms_per_utt)} "
            f"| {fmt(r.b16_ms_total)} | {fmt(r.b16_speedup)} | {fmt(r.fbank_ratio)} "
            f"| {r.repeats} |"
        )
    return "\n".join(lines)


def head_rule(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


def section_fbank(fb: FbankRow, speaker_rows: list[SpeakerRow], settings: Settings) -> str:
    dev = "CPU" if settings.device.type == "cpu" else "GPU"
    lines = [
        "## Fbank front end",
        "",
        f"`models.features.Fbank` (torchaudio Kaldi fbank; it loops over the rows of a batch), "
        f"{settings.seconds:g}-s utterance:",
        "",
        f"| {dev} ms/utt b1 | {dev} ms/utt b16 | runs |",
        "|---|---|---|",
        f"| {fmt(fb.b1_ms)} | {fmt(fb.b16_ms_per_utt)} | {fb.repeats} |",
    ]
    ratios = [(r.fbank_ratio, r.preset) for r in speaker_rows if math.isfinite(r.fbank_ratio)]
    if ratios:
        lo, hi = min(ratios), max(ratios)
        lines += [
            "",
            f"Share relative to a batch-1 model forward (measured side by side, column "
            f"`fbank / fwd b1` above): from {fmt(100 * lo[0])} % of the forward ({lo[1]}) to "
            f"{fmt(100 * hi[0])} % ({hi[1]}).",
        ]
        heavy = [p for ratio, p in ratios if ratio >= 0.25]
        if heavy:
            lines[-1] += (
                f" For {', '.join(heavy)} the fbank costs at least a quarter of the forward: "
                "compute it on CPU data workers (Ray Data) rather than in the GPU/Serve replica."
            )
    return "\n".join(lines)


def section_reference(
    reference_root: Path | None, settings: Settings, notes: list[str] | None = None
) -> str | None:
    """The 3D-Speaker comparison from ``ray_jobs.compare_reference``, or None with a note."""
    notes = notes if notes is not None else []
    if reference_root is None:
        notes.append("3D-Speaker reference comparison: not requested (pass `--reference-root`).")
        return None
    try:
        import ray_jobs.compare_reference.core as cr
    except ModuleNotFoundError as exc:
        if exc.name != "ray_jobs.compare_reference.core":
            raise
        notes.append("3D-Speaker reference comparison: `ray_jobs/compare_reference.py` is absent.")
        return None
    json_path = cr.default_json_path()
    if not json_path.is_file():
        notes.append(f"3D-Speaker reference comparison: {json_path} not found.")
        return None
    specs = json.loads(json_path.read_text())
    repeats = 3 if settings.quick else 7
    results: list[dict[str, Any]] = []
    for entry, spec in specs.items():
        log.info("reference comparison: %s", entry)
        try:
            res = cr.compare_entry(entry, spec, reference_root, repeats, 0)
        except Exception as exc:  # one broken entry must not lose the others
            log.warning("reference comparison of %s failed: %s", entry, exc)
            res = {"entry": entry, "status": f"failed: {type(exc).__name__}: {exc}"}
        results.append(res)
    return "\n".join(
        [
            "## 3D-Speaker reference comparison",
            "",
            f"`ray_jobs.compare_reference` against the checkout at `{reference_root}`: reference "
            "weights (randomised, BatchNorm statistics included) loaded into our "
            "`3dspeaker/<entry>` preset with `strict=True`; max abs difference of the raw "
            f"embeddings on the same fbank input; {torch.get_num_threads()} threads, "
            f"{repeats} interleaved runs (median). Ratio = ours / reference (< 1: we are faster).",
            "",
            cr.markdown(results),
        ]
    )


def section_ray_data(quick: bool, notes: list[str] | None = None) -> str | None:
    """Ray Data ingest throughput: packed synthetic shards -> crops -> (augment) -> fbank.

    Runs ``datasets.ray_data.benchmark_throughput`` on a local Ray cluster over shards of a
    synthetic corpus, without and with waveform augmentation (real noise and RIRs from
    ``../shared/data`` when present), and reports crops/s and crops/s per CPU.
    """
    notes = notes if notes is not None else []
    import tempfile

    from datasets.augment import AugmentConfig
    from datasets.hdf5_shards import pack_shards, shard_paths
    from datasets.speaker_pipeline import CropSpec, FeatureSpec
    from datasets.synth import generate_corpus

    try:
        from datasets.ray_data import benchmark_throughput
        from datasets.ray_env import init_ray
    except ImportError as exc:
        notes.append(f"Ray Data ingest throughput: Ray not importable ({exc}).")
        return None
    real = Path(os.environ.get("VOXRAY_REAL_DATA", REPO_ROOT.parent / "shared" / "data"))
    noise, rir = (str(real / "noise"), str(real / "rir")) if real.is_dir() else ("", "")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        utts = generate_corpus(
            Path(tmp) / "tree",
            num_speakers=8,
            utts_per_speaker=4 if quick else 8,
            seconds=(2.0, 4.0),
            seed=0,
        )
        shards = shard_paths(
            pack_shards(utts, Path(tmp) / "shards", utts_per_shard=8, progress=False)
        )
        crop = CropSpec(
            speakers=tuple(sorted({u.speaker for u in utts})),
            crop_seconds=2.0,
            crops_per_utterance=8,
        )
        init_ray()
        variants = {
            "fbank + SpecAugment": AugmentConfig(noise_prob=0.0, reverb_prob=0.0),
            "noise + RIR + fbank + SpecAugment": AugmentConfig(noise_prob=1.0, reverb_prob=1.0),
        }
        for name, aug in variants.items():
            if aug.noise_prob and not noise:
                notes.append("Ray Data: augmentation row skipped (no ../shared/data noise/RIRs).")
                continue
            stats = benchmark_throughput(
                shards,
                crop,
                FeatureSpec(augment=aug, noise=noise, rir=rir),
                repeats=1 if quick else 3,
            )
            rows.append({"pipeline": name, **stats})
    keys = ["pipeline", "crops_per_s", "crops_per_s_per_cpu", "num_cpus", "rows", "repeats"]
    head = "| " + " | ".join(keys) + " |"
    lines = [
        "## Ray Data ingest",
        "",
        "2-s training crops from packed HDF5 shards (h5py read in `flat_map`, crop, optional "
        "noise/RIR, Kaldi fbank, SpecAugment in `map_batches`) delivered to the driver per second "
        "on a local Ray cluster using every core; median of the repeats. Per-CPU = rate / CPUs Ray "
        "may use, so a GPU that trains at R crops/s needs about R / per-CPU cores of ingest.",
        "",
        head,
        head_rule(head),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(fmt(r[k]) if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )
    return "\n".join(lines)


def section_service(quick: bool, notes: list[str] | None = None) -> str | None:
    """The speaker service over HTTP: requests/s and latency of /verify and /identify.

    Saves a random-weight ``3dspeaker/campplus_192`` checkpoint (the real model's compute;
    ``campplus-tiny`` with ``quick``) to a temporary folder, serves it on a local Ray cluster
    (``ray_jobs.cluster.init_ray``) with ``serve.bench.benchmark_service`` (which shuts Serve down
    afterwards) and renders each endpoint and concurrency next to the bare model's batched
    throughput.
    """
    notes = notes if notes is not None else []
    import tempfile

    try:
        from datasets.ray_env import init_ray
        from serve.bench import benchmark_service
    except ImportError as exc:
        notes.append(f"Speaker service: Ray Serve not importable ({exc}).")
        return None
    from models import build_model, save_checkpoint

    preset = "campplus-tiny" if quick else "3dspeaker/campplus_192"
    concurrency = (1, 8, 32)
    per_level = 32 if quick else 128
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="voxray-bench-serve-") as tmp:
        ckpt = save_checkpoint(build_model(preset).eval(), Path(tmp) / "model.pt")
        init_ray()
        res = benchmark_service(
            ckpt, concurrency=concurrency, requests_per_level=per_level, num_enrolled=1000
        )
    cfg, model_only = res["config"], res["model_only"]
    model_rate = float(model_only["clips_per_s"])
    clips_per_request = {"verify": 2, "identify": 1}
    head = (
        "| endpoint | concurrency | requests/s | p50 ms | p99 ms | clips/s "
        "| service / model | ok / sent |"
    )
    lines = [
        "## Speaker service",
        "",
        f"`serve.bench.benchmark_service` on `{preset}` (random weights; model id "
        f"`{res['model']['model_id']}`, {res['model']['embed_dim']}-d), "
        f"{cfg['clip_seconds']:g}-s clips, /identify against {cfg['num_enrolled']} enrolled "
        f"speakers. Bare model (`SpeakerEmbedder.embed_batch`, batch "
        f"{model_only['batch_size']}, 1 thread, fbank included): **{fmt(model_rate)} clips/s**. "
        "`service / model` = the endpoint's clips/s (2 per /verify request, 1 per /identify) "
        "over the bare model's.",
        "",
        head,
        head_rule(head),
    ]
    for endpoint in ("verify", "identify"):
        for lvl in res[endpoint]:
            rate = float(lvl["requests_per_s"])
            clips = clips_per_request[endpoint] * rate
            ratio = clips / model_rate if model_rate > 0 else float("nan")
            errors = ", ".join(f"{k}: {v}" for k, v in sorted(lvl["errors"].items()))
            lines.append(
                f"| /{endpoint} | {lvl['concurrency']} | {fmt(rate)} | {fmt(lvl['p50_ms'])} "
                f"| {fmt(lvl['p99_ms'])} | {fmt(clips)} | {fmt(ratio)} "
                f"| {lvl['ok']} / {lvl['requests']}{f' ({errors})' if errors else ''} |"
            )
    app = cfg["app_args"]
    auto = app.get("autoscaling", {})
    lo, hi = auto.get("min_replicas", 1), auto.get("max_replicas", 1)
    lines += [
        "",
        "How measured: the app (`serve.app:build_app`) runs on loopback on a local Ray cluster on "
        f"this machine: one ingress replica and {lo if lo == hi else f'{lo}-{hi}'} embedding "
        f"replica(s), `torch_threads` "
        f"{app.get('torch_threads', 1)}, `@serve.batch` up to {app.get('max_batch_size', 16)} "
        f"clips / {1000 * app.get('batch_wait_timeout_s', 0.01):g} ms. The client (httpx, "
        f"asyncio, the same machine, so it competes for the CPUs) sends {cfg['requests_per_level']} "
        "JSON requests (base64 WAV, 16 distinct synthetic clips) per concurrency level after "
        "2 warm-up requests; p50/p99 are per-request wall times of the successful requests. The "
        f"gallery (random embeddings, `POST /galleries`) took {fmt(cfg['enroll_gallery_s'])} s to "
        "enroll. The bare model is timed in the same run on the same decoded clips.",
    ]
    return "\n".join(lines)


# --- driver -------------------------------------------------------------------------------------


def section_extraction(quick: bool, notes: list[str] | None = None) -> str | None:
    """Bulk extraction: the Ray Data job vs a plain single-process loop over the same files.

    A full-size CAM++ (``3dspeaker/campplus_192``, random weights: same compute as a trained
    one) embeds a synthetic corpus both ways in the same run; medians of the repeats.
    """
    notes = notes if notes is not None else []
    try:
        from ray_jobs.extract.job import benchmark_extraction
    except ImportError as exc:
        notes.append(f"Extraction: Ray not importable ({exc}).")
        return None
    n = 48 if quick else 240
    res = benchmark_extraction(
        num_utterances=n, num_speakers=12, seconds=(2.0, 4.0),
        model="campplus-tiny" if quick else "3dspeaker/campplus_192",
        batch_size=16, repeats=1 if quick else 3,
    )  # fmt: skip
    keys = ["utterances", "audio_seconds", "model", "num_cpus", "ray_utterances_per_s",
            "baseline_utterances_per_s", "speedup"]  # fmt: skip
    head = "| " + " | ".join(keys) + " |"
    cells = [fmt(res[k]) if isinstance(res[k], float) else str(res[k]) for k in keys]
    return "\n".join([
        "## Bulk embedding extraction",
        "",
        f"`python -m ray_jobs.extract` (Ray Data: decode + fbank CPU tasks, model actors batching "
        f"equal-length clips) against a single-process loop (load, fbank, embed one file at a "
        f"time) over the same {res['utterances']} synthetic 2-4 s files, in the same run; median "
        f"of {res['repeats']} runs each. The Ray figure includes the pipeline's start-up (actor "
        "creation, model load), which small corpora do not amortise.",
        "",
        head,
        head_rule(head),
        "| " + " | ".join(cells) + " |",
    ])  # fmt: skip


def run(
    output: Path,
    *,
    quick: bool = False,
    families: Sequence[str] = SUPPORTED_FAMILIES,
    reference_root: Path | None = None,
    threads: int = 2,
    device: str = "cpu",
    ray_data: bool = True,
    service: bool = True,
    argv: Sequence[str] = (),
) -> Path:
    """Measure, write ``output`` (Markdown) and return its path."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    settings = Settings.make(quick=quick, threads=threads, device=torch.device(device))
    notes: list[str] = []
    unknown = [f for f in families if f not in SUPPORTED_FAMILIES]
    for fam in unknown:
        notes.append(
            f"family `{fam}`: no benchmark yet (supported: {', '.join(SUPPORTED_FAMILIES)})."
        )
    sections = [section_method(machine_info(settings.device), settings, argv)]

    warm_up_runtime(settings.device)
    speaker_rows: list[SpeakerRow] = []
    if "speaker" in families:
        targets = speaker_targets(quick)
        if not targets:
            notes.append("speaker family: no presets registered.")
        for name in targets:
            log.info("speaker: %s", name)
            speaker_rows.append(speaker_row(name, settings))
        if speaker_rows:
            sections.append(section_speaker(speaker_rows, settings))
        log.info("fbank")
        sections.append(section_fbank(fbank_row(settings), speaker_rows, settings))

    # The other products: each section module measures side by side within its own run.
    if "diarization" in families:
        from ray_jobs.bench.diarize import diarization_section

        log.info("diarization")
        sections.append(diarization_section(None, quick))
    if "tse" in families:
        from ray_jobs.bench.tse import tse_section

        log.info("target speaker extraction")
        sections.append(tse_section(quick))
    if "codec" in families:
        from ray_jobs.bench.codec import codec_section

        log.info("codecs and classifiers")
        sections.append(codec_section(quick))

    if quick:
        notes.append(
            "3D-Speaker reference comparison, Ray Data ingest and the speaker service: skipped in "
            "--quick mode."
        )
    else:
        ref = section_reference(reference_root, settings, notes)
        if ref:
            sections.append(ref)
        if ray_data:
            rd = section_ray_data(quick, notes)
            if rd:
                sections.append(rd)
        else:
            notes.append("Ray Data ingest throughput: skipped (--no-ray-data).")
        if ray_data:
            ex = section_extraction(quick, notes)
            if ex:
                sections.append(ex)
        if service:
            svc = section_service(quick, notes)
            if svc:
                sections.append(svc)
        else:
            notes.append("Speaker service: skipped (--no-service).")

    elapsed = time.perf_counter() - started
    load = f", load average at end {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    sections[0] += f"\n- This run took {elapsed / 60:.1f} min{load}."
    if notes:
        sections.append("## Not measured in this run\n\n" + "\n".join(f"- {n}" for n in notes))
    doc = "# Benchmarks\n\nGenerated by `make bench` (`python -m ray_jobs.bench`); do not edit by hand.\n\n"
    doc += "\n\n".join(sections) + "\n"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(doc)
    log.info("wrote %s", output.resolve())
    return output


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--quick", action="store_true", help="-tiny presets only, few repeats")
    parser.add_argument(
        "--families",
        default=",".join(SUPPORTED_FAMILIES),
        help="comma-separated: " + ", ".join(SUPPORTED_FAMILIES),
    )
    parser.add_argument("--reference-root", type=Path, default=None, help="3D-Speaker checkout")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-ray-data", action="store_true", help="skip the Ray Data section")
    parser.add_argument(
        "--no-service", action="store_true", help="skip the speaker-service (Ray Serve) section"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU")
    run(
        args.output,
        quick=args.quick,
        families=[f.strip() for f in args.families.split(",") if f.strip()],
        reference_root=args.reference_root,
        threads=args.threads,
        device=args.device,
        ray_data=not args.no_ray_data,
        service=not args.no_service,
        argv=argv,
    )
    return 0

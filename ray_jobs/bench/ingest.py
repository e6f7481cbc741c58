"""BENCHMARKS.md sections on data at scale: Ray Data ingest throughput and bulk embedding
extraction (the Ray Data job against a single-process loop).

Each section starts a local Ray cluster (``datasets.ray_data.init_ray``) and returns None with a
note when Ray is not importable; ``ray_jobs.bench.report`` assembles the document.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets.ray_env import REPO_ROOT
from ray_jobs.bench.models import fmt, head_rule


def section_ray_data(quick: bool, notes: list[str] | None = None) -> str | None:
    """Ray Data ingest throughput: packed synthetic shards -> crops -> (augment) -> fbank.

    Runs ``datasets.ray_data.benchmark_throughput`` on a local Ray cluster over shards of a
    synthetic corpus, without and with waveform augmentation (real noise and RIRs from
    ``../shared/data`` when present), and reports crops/s and crops/s per CPU.
    """
    notes = notes if notes is not None else []
    import tempfile

    from datasets.augment import AugmentConfig
    from datasets.hdf5_shards import pack_shards
    from datasets.speaker_transforms import CropSpec, FeatureSpec
    from datasets.synth import generate_corpus

    try:
        from datasets.ray_data import benchmark_throughput, init_ray
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
        manifest = pack_shards(utts, Path(tmp) / "shards", utts_per_shard=8, progress=False)
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
                manifest,
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

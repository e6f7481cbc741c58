"""Pack a speech corpus, noise bank or RIR bank into HDF5 shards (see datasets/hdf5_shards.py).

    python -m ray_jobs.pack --data-root /data/vox --output /data/shards/vox
    python -m ray_jobs.pack --data-root ../shared/data/speech/librispeech-train-clean-100 \\
        --layout librispeech --output shards/libri
    python -m ray_jobs.pack --wav-scp data/train/wav.scp --utt2spk data/train/utt2spk --output ...
    python -m ray_jobs.pack --data-root ../shared/data/noise --kind noise --output shards/noise

Ray-free on purpose: packing is file I/O bound and resumable, so it runs the same on a laptop or
as ``ray job submit --working-dir . -- python -m ray_jobs.pack ...`` on a cluster node. Rerunning
after an interruption keeps finished shards (``--no-resume`` rewrites them). The job has no
core of its own: this CLI picks the utterance source (``datasets.manifests``) and reports; the
packing is ``datasets.hdf5_shards.pack_shards``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from datasets import storage
from datasets.audio import AudioError
from datasets.hdf5_shards import ShardError, load_manifest, pack_shards
from datasets.manifests import (
    FILENAME_PATTERNS,
    TREE_LAYOUTS,
    ManifestError,
    Utterance,
    read_kaldi,
    read_manifest_csv,
    scan_files,
    scan_source,
)
from ray_jobs.cli import configure_cli_logging, user_error

log = logging.getLogger("ray_jobs.pack.cli")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.pack",
        description="Pack audio into resumable HDF5 shards with a manifest.json.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-root", help="folder tree of audio files")
    src.add_argument("--manifest", help="utterance CSV (datasets.manifests.write_manifest_csv)")
    src.add_argument("--wav-scp", help="Kaldi wav.scp (needs --utt2spk)")
    p.add_argument("--utt2spk", help="Kaldi utt2spk, with --wav-scp")
    p.add_argument(
        "--layout",
        default="auto",
        help=f"with --data-root: one of {', '.join(TREE_LAYOUTS)}, files (unlabelled clips, e.g. "
        f"for codec training) or a file-name pattern name ({', '.join(FILENAME_PATTERNS)}); "
        "ignored for --kind noise/rir (one file per entry)",
    )
    p.add_argument("--dataset", help="dataset name (default: the folder name / 'kaldi')")
    p.add_argument("--output", required=True, help="output folder for shards + manifest.json")
    p.add_argument("--kind", choices=("speech", "noise", "rir"), default="speech")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--utts-per-shard", type=int, default=256)
    p.add_argument("--workers", type=int, default=1, help="processes writing shards")
    p.add_argument("--no-resume", action="store_true", help="rewrite finished shards too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def collect(args: argparse.Namespace) -> list[Utterance]:
    """The utterance list named by the command-line source arguments."""
    if args.wav_scp:
        if not args.utt2spk:
            raise ManifestError("--wav-scp needs --utt2spk")
        return read_kaldi(args.wav_scp, args.utt2spk, dataset=args.dataset or "kaldi")
    if args.utt2spk:
        raise ManifestError("--utt2spk is only used with --wav-scp")
    if args.manifest:
        return read_manifest_csv(args.manifest)
    if args.kind in ("noise", "rir"):
        return scan_files(args.data_root, dataset=args.dataset)
    return scan_source(args.data_root, args.layout, dataset=args.dataset)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    if args.sample_rate <= 0 or args.utts_per_shard <= 0:
        return user_error("--sample-rate and --utts-per-shard must be positive")
    try:
        utts = collect(args)
        # a URI (s3://bucket/shards/vox): packed in a local folder named after it (resumable
        # there), then uploaded; training reads it back with --data-root s3://...
        local = storage.stage_dir(args.output, "pack")
        path = pack_shards(
            utts,
            local,
            sample_rate=args.sample_rate,
            kind=args.kind,
            utts_per_shard=args.utts_per_shard,
            resume=not args.no_resume,
            progress=not args.no_progress,
            workers=args.workers,
        )
        manifest = load_manifest(path)
        if storage.is_uri(args.output):
            storage.upload_tree(local, args.output)
            path = storage.join(args.output, Path(path).name)
    except (AudioError, ManifestError, ShardError, OSError) as exc:
        return user_error(exc)
    print(
        f"packed {manifest['num_utterances']} {args.kind} utterances "
        f"({manifest['total_seconds'] / 3600:.2f} h, {len(manifest['speakers'])} speakers) "
        f"into {len(manifest['shards'])} shards at {manifest['sample_rate']} Hz; "
        f"{len(manifest['failures'])} failed to decode -> {path}"
    )
    for fail in manifest["failures"][:5]:
        print(f"  failed: {fail['path']}: {fail['error']}")
    if manifest["num_utterances"] == 0:
        user_error("no utterance could be decoded")
        return 1
    return 0

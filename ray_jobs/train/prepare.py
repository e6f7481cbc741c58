"""Training-data preparation shared by ``ray_jobs.train`` and ``ray_jobs.demo`` (Ray-free).

``--data-root`` may be a packed shard manifest (used as is) or a raw audio tree: the tree is
scanned, ``val_speakers`` speakers are set aside for evaluation (never trained on), and the
rest is packed into ``<output>/shards`` resumably, so rerunning a job after an interruption
reuses the finished shards. Noise and RIR folders are packed the same way
(:func:`prepare_bank`), so training workers read them on demand instead of each holding a copy.
:func:`speaker_val_rows` turns held-out utterances into the rows the speaker task validates on
every epoch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.audio import AudioError, load_audio, write_audio
from datasets.banks import is_packed
from datasets.hdf5_shards import load_manifest, pack_shards, shard_paths
from datasets.manifests import (
    FILES_LAYOUT,
    ManifestError,
    Utterance,
    make_key,
    scan_files,
    scan_source,
    split_speakers,
    write_manifest_csv,
)
from models.features import Fbank, FbankConfig
from models.pipelines.speaker import embedder_input
from ray_jobs.train.experiment import DataConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    manifest: Path  # training shard manifest
    shards: list[str]  # absolute shard paths
    speakers: tuple[str, ...]  # training speakers, sorted
    num_utterances: int
    val_utterances: list[Utterance]  # held-out labelled utterances ([] = no evaluation)


def segment_utterances(
    utts: list[Utterance], out_dir: str | Path, seconds: float, sample_rate: int
) -> list[Utterance]:
    """Cut each utterance into non-overlapping ``seconds``-long WAV segments under
    ``out_dir/<dataset>/<speaker>/<utterance>-sNN.wav`` (a shorter tail is dropped)."""
    out_dir = Path(out_dir)
    n = int(round(seconds * sample_rate))
    segments: list[Utterance] = []
    for u in utts:
        try:
            wav, _ = load_audio(u.path, target_sr=sample_rate)
        except AudioError as exc:
            log.warning("evaluation utterance %s skipped: %s", u.key, exc)
            continue
        for i in range(len(wav) // n):
            utt_id = f"{u.utterance}-s{i:02d}"
            path = out_dir / u.dataset / u.speaker / f"{utt_id}.wav"
            if not path.is_file():
                write_audio(path, wav[i * n : (i + 1) * n], sample_rate)
            segments.append(
                Utterance(
                    key=make_key(u.dataset, u.speaker, utt_id), path=str(path),
                    dataset=u.dataset, speaker=u.speaker, utterance=utt_id, duration=seconds,
                )
            )  # fmt: skip
    log.info(
        "cut %d evaluation utterances into %d segments of %.1f s", len(utts), len(segments), seconds
    )
    return segments


def prepare_bank(path: str, kind: str, sample_rate: int, pack_root: str | Path) -> str:
    """A noise or RIR bank as a packed manifest workers can read on demand: ``""`` and packed
    manifests are returned as they are; a folder of audio files is packed once (resumably) at
    ``sample_rate`` into ``pack_root/banks/<kind>-<digest of the folder path>``."""
    if not path or is_packed(path):
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise AudioError(f"{path}: not a folder of audio files nor a shard manifest")
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:10]
    out = Path(pack_root) / "banks" / f"{kind}-{digest}"
    files = scan_files(folder)
    if is_packed(out):  # reuse as is: concurrent trials must not rewrite a manifest in use
        m = load_manifest(out)
        done = {u["key"] for u in m["utterances"]} | {f["key"] for f in m["failures"]}
        if (m["kind"], m["sample_rate"]) == (kind, sample_rate) and done == {u.key for u in files}:
            return str(out / "manifest.json")
    log.info("packing the %s bank %s into %s (once; reused by later runs)", kind, folder, out)
    return str(pack_shards(files, out, sample_rate=sample_rate, kind=kind))


def _is_manifest(path: Path) -> bool:
    return path.name == "manifest.json" or (path / "manifest.json").is_file()


def scan_training_source(
    path: str | Path, layout: str, *, unlabelled: bool = False
) -> list[Utterance]:
    """``scan_source(path, layout)``; with ``unlabelled`` (a task that needs no speaker labels,
    e.g. codec training) and ``layout="auto"``, a folder without a speaker structure (a flat
    folder of clips, ESC-50's ``audio/``) is read as unlabelled files (layout ``files``: each
    file its own "speaker", so held-out validation files are still disjoint from training)."""
    if not (unlabelled and layout == "auto"):
        return scan_source(path, layout)
    try:
        utts = scan_source(path, layout)
    except ManifestError as exc:
        log.info("%s has no speaker structure (%s); reading it as unlabelled files", path, exc)
        return scan_source(path, FILES_LAYOUT)
    if len({u.speaker for u in utts}) < 2:  # e.g. esc50/ = one "speaker" folder, audio/
        log.info("%s has one speaker folder; reading it as unlabelled files", path)
        return scan_source(path, FILES_LAYOUT)
    return utts


def prepare_speaker_data(
    data: DataConfig, output_dir: str | Path, *, unlabelled: bool = False
) -> PreparedData:
    """Pack ``data.train`` (a tree, or shards already packed) and list the held-out utterances;
    ``unlabelled`` accepts folders without speakers (:func:`scan_training_source`)."""
    if not data.train:
        raise ValueError("no training data: pass --data-root DIR (an audio tree or shard manifest)")
    output_dir = Path(data.pack_dir) if data.pack_dir else Path(output_dir)
    train_path = Path(data.train)
    val_utts: list[Utterance] = []
    if _is_manifest(train_path):
        manifest_path = train_path if train_path.suffix == ".json" else train_path / "manifest.json"
        if data.val_speakers:
            raise ValueError(
                "data.val_speakers needs a raw audio tree; for packed shards give a separate "
                "evaluation tree with data.val"
            )
    else:
        utts = scan_training_source(train_path, data.layout, unlabelled=unlabelled)
        if data.val_speakers:
            train_utts, val_utts = split_speakers(utts, data.val_speakers, seed=data.seed)
            write_manifest_csv(val_utts, output_dir / "val_utterances.csv")
        else:
            train_utts = utts
        log.info(
            "packing %d utterances of %d speakers from %s",
            len(train_utts),
            len({u.speaker for u in train_utts}),
            train_path,
        )
        manifest_path = pack_shards(
            train_utts, output_dir / "shards", sample_rate=data.sample_rate, kind="speech"
        )
    if data.val:
        val_utts = scan_training_source(data.val, data.val_layout, unlabelled=unlabelled)
    if val_utts and data.val_segment_seconds > 0:
        val_utts = segment_utterances(
            val_utts, output_dir / "val_segments", data.val_segment_seconds, data.sample_rate
        )
    manifest = load_manifest(manifest_path)
    if manifest["sample_rate"] != data.sample_rate:
        raise ValueError(
            f"{manifest_path} is packed at {manifest['sample_rate']} Hz but data.sample_rate is "
            f"{data.sample_rate}"
        )
    speakers = tuple(manifest["speakers"])
    if len(speakers) < 2:
        raise ValueError(
            f"{manifest_path}: training needs at least 2 speakers, found {len(speakers)}"
        )
    return PreparedData(
        manifest=Path(manifest_path),
        shards=shard_paths(manifest_path),
        speakers=speakers,
        num_utterances=int(manifest["num_utterances"]),
        val_utterances=val_utts,
    )


def speaker_val_rows(
    utterances: Sequence[Utterance], fbank: FbankConfig, max_utterances: int = 0, seed: int = 0
) -> tuple[list[dict[str, Any]], list[Utterance]]:
    """Held-out utterances -> the speaker task's per-epoch validation rows, and the utterances
    they come from (row ``index`` = position in that list).

    A row is ``{"feats": (T, num_mel_bins) float32, "speaker": int64, "index": int64}``: the
    whole utterance's fbank as ``SpeakerEmbedder`` computes it (same input checks, resampling to
    ``fbank.sample_rate``; pass an inference config, ``dither=0``), so the epoch's EER is the one
    ``ray_jobs/evaluate/speaker.py`` measures on the same utterances. Above ``max_utterances``
    (> 0) a subset seeded by ``seed`` is kept, the same every epoch. Unreadable or too-short
    utterances are skipped with a warning. Returns no rows when fewer than 2 speakers, or no
    speaker with 2 utterances, remain (no trials to score).
    """
    utts = list(utterances)
    if max_utterances > 0 and len(utts) > max_utterances:
        keep = np.sort(np.random.default_rng(seed).choice(len(utts), max_utterances, replace=False))
        utts = [utts[int(i)] for i in keep]
    names = [f"{u.dataset}/{u.speaker}" for u in utts]
    ids = {name: i for i, name in enumerate(sorted(set(names)))}
    front_end = Fbank(fbank)
    rows: list[dict[str, Any]] = []
    used: list[Utterance] = []
    for u, name in zip(utts, names, strict=True):
        try:
            wav, _ = load_audio(u.path, target_sr=fbank.sample_rate)
            x = embedder_input(wav, fbank.sample_rate, fbank)
        except AudioError as exc:
            log.warning("validation utterance %s skipped: %s", u.key, exc)
            continue
        with torch.inference_mode():
            feats = front_end(x.unsqueeze(0))[0].numpy()  # (T, num_mel_bins)
        rows.append({"feats": feats, "speaker": ids[name], "index": len(rows)})
        used.append(u)
    counts = np.bincount([r["speaker"] for r in rows], minlength=len(ids))
    if (counts > 0).sum() < 2 or counts.max(initial=0) < 2:
        log.warning(
            "%d validation utterances of %d speakers give no verification trials (need 2 "
            "speakers and one with 2 utterances): no per-epoch val_eer",
            len(rows),
            int((counts > 0).sum()),
        )
        return [], []
    log.info(
        "%d held-out utterances of %d speakers validate every epoch",
        len(rows),
        int((counts > 0).sum()),
    )
    return rows, used

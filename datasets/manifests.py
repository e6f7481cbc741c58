"""Utterance lists: scanning folder trees, Kaldi data dirs and CSV manifests.

Every source becomes a sorted list of :class:`Utterance` whose ``key`` is
``f"{dataset}_{speaker}_{utterance}"``, the ``dataset_speaker_utterance`` key users know from
their own trees. Supported sources:

- ``root/dataset/speaker/utt.wav`` (utterances may sit in deeper sub-folders of the speaker
  folder, e.g. VoxCeleb ``id00012/21Uxsk56VDQ/00001.wav`` -> utterance ``21Uxsk56VDQ-00001``);
- ``root/speaker/utt.wav`` (dataset = the root folder's name);
- flat folders whose file names carry the speaker id (LibriSpeech ``103-1240-0000.flac``,
  FSDD ``0_george_0.wav``, CMU ARCTIC ``cmu_arctic_us_aew_a0001.wav``): a regex with a
  ``speaker`` group, see :data:`FILENAME_PATTERNS`;
- Kaldi ``wav.scp`` + ``utt2spk`` (files only, not pipe commands);
- CSV manifests: ours (:data:`CSV_COLUMNS`) and 3D-Speaker's (``ID,dur,path,start,stop,spk``,
  ``datasets/manifests_3dspeaker.py``);
- plain folders of audio files (noise / RIR banks, unlabelled clips; layout ``files``):
  speaker = file stem.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from datasets.audio import AUDIO_EXTENSIONS, audio_info

log = logging.getLogger(__name__)

Layout = Literal["auto", "dataset/speaker/utt", "speaker/utt"]

# Speaker id from the file name (matched against the file name with its extension).
FILENAME_PATTERNS: dict[str, str] = {
    "librispeech": r"^(?P<speaker>\d+)-",  # 103-1240-0000.flac
    "fsdd": r"^\d+_(?P<speaker>[a-z]+)_",  # 0_george_0.wav
    "cmu-arctic": r"^cmu_arctic_us_(?P<speaker>[a-z]+)_",  # cmu_arctic_us_aew_a0001.wav
}

CSV_COLUMNS = ("key", "path", "dataset", "speaker", "utterance", "duration")
TREE_LAYOUTS = ("auto", "dataset/speaker/utt", "speaker/utt")
# Unlabelled audio (a folder of clips, ESC-50's audio/, a noise bank): every file under the root,
# each its own "speaker" (scan_files). For tasks that need no speaker labels (codec training).
FILES_LAYOUT = "files"


class ManifestError(ValueError):
    """A data source that cannot be turned into an utterance list; the message says why."""


@dataclass(frozen=True)
class Utterance:
    key: str  # f"{dataset}_{speaker}_{utterance}", unique within a manifest
    path: str  # audio file path as found (absolute when scanned from an absolute root)
    dataset: str
    speaker: str
    utterance: str
    duration: float | None = None  # seconds, when known


def make_key(dataset: str, speaker: str, utterance: str) -> str:
    return f"{dataset}_{speaker}_{utterance}"


def _utt(path: Path, dataset: str, speaker: str, utterance: str) -> Utterance:
    for name, value in (("dataset", dataset), ("speaker", speaker), ("utterance", utterance)):
        if not value or "/" in value:
            raise ManifestError(f"{path}: invalid {name} id {value!r} (empty or contains '/')")
    return Utterance(make_key(dataset, speaker, utterance), str(path), dataset, speaker, utterance)


def _finish(utts: list[Utterance], source: str, with_durations: bool) -> list[Utterance]:
    if not utts:
        raise ManifestError(
            f"no audio files found in {source}; check the path, the layout and the extensions"
        )
    utts = sorted(utts, key=lambda u: u.key)
    seen: dict[str, str] = {}
    for u in utts:
        if u.key in seen:
            raise ManifestError(
                f"duplicate utterance key {u.key!r}: {seen[u.key]} and {u.path}; "
                f"keep one format per utterance or rename one of them"
            )
        seen[u.key] = u.path
    if with_durations:
        utts = [replace(u, duration=audio_info(u.path)[2]) for u in utts]
    return utts


@dataclass(frozen=True)
class WalkLimits:
    """How a tree walk treats symlinks and how far it may go (``scan_tree(walk=...)``).

    ``follow_links=False`` lists neither symlinked folders nor symlinked files (a service
    importing from allow-listed folders must not be led outside them); with ``True`` (data
    trees of symlinked corpora) each folder is entered once, by device and inode, so a
    symlink loop ends. ``max_files`` and ``max_seconds`` bound the walk itself:
    :class:`ManifestError` once more files are found or the time is up.
    """

    follow_links: bool = True
    max_files: int | None = None
    max_seconds: float | None = None


def _walk_audio(
    root: Path, extensions: tuple[str, ...], walk: WalkLimits = WalkLimits()
) -> list[Path]:
    """Audio files under ``root`` (recursive, hidden entries skipped), sorted."""
    exts = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    start = time.monotonic()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=walk.follow_links):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink: a loop
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if walk.max_seconds is not None and time.monotonic() - start > walk.max_seconds:
            raise ManifestError(
                f"listing the tree took over {walk.max_seconds:g} s; import smaller folders"
            )
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(exts):
                continue
            f = Path(dirpath) / name
            if not walk.follow_links and f.is_symlink():
                continue
            found.append(f)
            if walk.max_files is not None and len(found) > walk.max_files:
                raise ManifestError(
                    f"the tree holds more than {walk.max_files} audio files; import sub-folders "
                    f"separately"
                )
    return sorted(found)


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"data root {root} is not a folder")
    return root


def scan_tree(
    root: str | Path,
    layout: Layout = "auto",
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    with_durations: bool = False,
    walk: WalkLimits = WalkLimits(),
) -> list[Utterance]:
    """Scan a speaker tree into a sorted utterance list.

    ``layout="auto"`` picks ``speaker/utt`` when some audio file sits directly in a first-level
    folder (``root/spk/utt.wav``), else ``dataset/speaker/utt``. A VoxCeleb-style root with no
    dataset level (``root/id00012/21Uxsk56VDQ/00001.wav``) looks like ``dataset/speaker/utt``
    to depth alone: pass ``layout="speaker/utt"`` for it. Files shallower than the layout are
    skipped with a warning. ``with_durations`` reads every header (slower on big trees).
    ``walk``: symlink policy and bounds of the walk (:class:`WalkLimits`).
    """
    root = _check_root(root)
    if layout not in ("auto", "dataset/speaker/utt", "speaker/utt"):
        raise ManifestError(
            f"unknown layout {layout!r}; use auto, dataset/speaker/utt or speaker/utt"
        )
    files = _walk_audio(root, extensions, walk)
    rels = [f.relative_to(root).parts for f in files]
    if layout == "auto":
        min_depth = min((len(p) for p in rels), default=3)
        layout = "speaker/utt" if min_depth <= 2 else "dataset/speaker/utt"
        log.info("scan_tree(%s): detected layout %s", root, layout)
    lead = 2 if layout == "dataset/speaker/utt" else 1  # folders before the utterance part
    utts, skipped = [], []
    for f, parts in zip(files, rels, strict=True):
        if len(parts) <= lead:
            skipped.append(f)
            continue
        if lead == 2:
            dataset, speaker = parts[0], parts[1]
        else:
            dataset, speaker = root.resolve().name, parts[0]
        rest = list(parts[lead:])
        rest[-1] = Path(rest[-1]).stem
        utts.append(_utt(f, dataset, speaker, "-".join(rest)))
    if skipped:
        log.warning(
            "scan_tree(%s, %s): skipped %d file(s) not at speaker depth, e.g. %s",
            root,
            layout,
            len(skipped),
            skipped[0],
        )
    return _finish(utts, f"{root} (layout {layout})", with_durations)


def scan_filename_pattern(
    root: str | Path,
    pattern: str,
    dataset: str | None = None,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    with_durations: bool = False,
    recursive: bool = False,
) -> list[Utterance]:
    """Flat folder(s) whose file names carry the speaker id.

    ``pattern`` is a regex with a named group ``speaker`` (searched in the file name) or a key
    of :data:`FILENAME_PATTERNS`. Utterance id = file stem; dataset defaults to the root
    folder's name. Files that do not match raise (a silently dropped speaker is worse).
    """
    root = _check_root(root)
    regex = re.compile(FILENAME_PATTERNS.get(pattern, pattern))
    if "speaker" not in regex.groupindex:
        raise ManifestError(
            f"pattern {pattern!r} has no (?P<speaker>...) group; known names: "
            f"{sorted(FILENAME_PATTERNS)}"
        )
    dataset = dataset or root.resolve().name
    if recursive:
        files = _walk_audio(root, extensions)
    else:
        exts = tuple(e.lower() for e in extensions)
        files = sorted(
            p
            for p in root.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(exts)
        )
    utts = []
    for f in files:
        m = regex.search(f.name)
        if m is None or not m.group("speaker"):
            raise ManifestError(
                f"{f}: file name does not match speaker pattern {regex.pattern!r}; "
                f"fix the pattern or move the file out of {root}"
            )
        utts.append(_utt(f, dataset, m.group("speaker"), f.stem))
    return _finish(utts, f"{root} (pattern {regex.pattern!r})", with_durations)


def scan_files(
    root: str | Path,
    dataset: str | None = None,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    with_durations: bool = False,
) -> list[Utterance]:
    """A plain (possibly nested) folder of audio files, e.g. a noise or RIR bank.

    Each file is its own "speaker": speaker = utterance = its path below ``root`` without
    extension, folders joined by ``-``.
    """
    root = _check_root(root)
    dataset = dataset or root.resolve().name
    utts = []
    for f in _walk_audio(root, extensions):
        parts = list(f.relative_to(root).parts)
        parts[-1] = Path(parts[-1]).stem
        name = "-".join(parts)
        utts.append(_utt(f, dataset, name, name))
    return _finish(utts, str(root), with_durations)


def _read_table(path: Path, what: str) -> list[tuple[str, str, int]]:
    if not path.is_file():
        raise ManifestError(f"{what} file {path} does not exist")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(maxsplit=1)
            if len(parts) != 2:
                raise ManifestError(f"{path}:{lineno}: expected '<utt-id> <value>', got {line!r}")
            rows.append((parts[0], parts[1].strip(), lineno))
    return rows


def read_kaldi(wav_scp: str | Path, utt2spk: str | Path, dataset: str = "kaldi") -> list[Utterance]:
    """Kaldi data dir files -> utterances. Only plain paths: pipe commands (``... |``) and
    archive offsets are rejected (run the command once and list the resulting files)."""
    wav_scp, utt2spk = Path(wav_scp), Path(utt2spk)
    spk = {}
    for utt, speaker, lineno in _read_table(utt2spk, "utt2spk"):
        if utt in spk:
            raise ManifestError(f"{utt2spk}:{lineno}: utterance {utt!r} listed twice")
        spk[utt] = speaker
    utts = []
    for utt, value, lineno in _read_table(wav_scp, "wav.scp"):
        if value.endswith("|") or value.startswith("|"):
            raise ManifestError(
                f"{wav_scp}:{lineno}: {utt!r} is a pipe command ({value!r}); voxray reads files "
                f"only: convert them first (e.g. run the command into a .wav) and list the paths"
            )
        if re.search(r"\.ark:\d+$", value):
            raise ManifestError(
                f"{wav_scp}:{lineno}: {utt!r} points into a Kaldi archive ({value!r}); "
                f"extract the audio to files first"
            )
        if utt not in spk:
            raise ManifestError(f"{wav_scp}:{lineno}: utterance {utt!r} is missing from {utt2spk}")
        utts.append(_utt(Path(value), dataset, spk[utt], utt))
    return _finish(utts, str(wav_scp), False)


def write_manifest_csv(utts: list[Utterance], path: str | Path) -> Path:
    """Write utterances as CSV with columns :data:`CSV_COLUMNS` (duration empty when unknown)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for u in utts:
            dur = "" if u.duration is None else repr(float(u.duration))
            writer.writerow([u.key, u.path, u.dataset, u.speaker, u.utterance, dur])
    return path


def read_manifest_csv(path: str | Path) -> list[Utterance]:
    """Read a CSV written by :func:`write_manifest_csv` (extra columns are an error), or one
    of 3D-Speaker's (header ``ID,dur,path,start,stop,spk``: ``datasets/manifests_3dspeaker.py``).

    A ``key`` column may be left empty; it is then derived from dataset/speaker/utterance.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest CSV {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        if "key" not in header and "ID" in header:  # 3D-Speaker's recipes' manifests
            from datasets.manifests_3dspeaker import is_3dspeaker_header, read_3dspeaker_csv

            if is_3dspeaker_header([h.strip() for h in header]):
                return read_3dspeaker_csv(path)
        missing = [c for c in ("path", "dataset", "speaker", "utterance") if c not in header]
        extra = [c for c in header if c not in CSV_COLUMNS]
        if missing or extra:
            raise ManifestError(
                f"{path}: bad CSV header {list(header)}: missing {missing}, unknown {extra}; "
                f"expected columns {list(CSV_COLUMNS)}"
            )
        utts = []
        for lineno, row in enumerate(reader, 2):
            try:
                dur = float(row["duration"]) if row.get("duration") else None
            except ValueError as exc:
                raise ManifestError(f"{path}:{lineno}: bad duration {row['duration']!r}") from exc
            u = _utt(Path(row["path"]), row["dataset"], row["speaker"], row["utterance"])
            if row.get("key") and row["key"] != u.key:
                raise ManifestError(
                    f"{path}:{lineno}: key {row['key']!r} != dataset_speaker_utterance {u.key!r}"
                )
            utts.append(replace(u, duration=dur))
    return _finish(utts, str(path), False)


def speaker_index(utts: list[Utterance]) -> dict[str, int]:
    """Sorted speaker id -> integer label (0..N-1), deterministic for a set of speakers.

    Speakers are identified by their id alone; when the same id appears in two datasets it is
    treated as one speaker and a warning is logged (rename ids if they are different people).
    """
    datasets: dict[str, set[str]] = defaultdict(set)
    for u in utts:
        datasets[u.speaker].add(u.dataset)
    shared = sorted(s for s, d in datasets.items() if len(d) > 1)
    if shared:
        log.warning(
            "%d speaker id(s) occur in several datasets and share one label, e.g. %r",
            len(shared),
            shared[0],
        )
    return {s: i for i, s in enumerate(sorted(datasets))}


def split_speakers(
    utts: list[Utterance], val: float | int, seed: int = 0
) -> tuple[list[Utterance], list[Utterance]]:
    """Split into ``(train, val)`` with disjoint speakers, deterministic for ``seed``.

    ``val``: a fraction in (0, 1) of the speakers, or an integer count >= 1. Both parts
    keep the input order.
    """
    speakers = sorted({u.speaker for u in utts})
    n = len(speakers)
    if isinstance(val, float) and not isinstance(val, bool) and 0 < val < 1:
        k = max(1, round(val * n))
    elif isinstance(val, int) and not isinstance(val, bool) and val >= 1:
        k = val
    else:
        raise ManifestError(
            f"val must be a fraction in (0, 1) or a speaker count >= 1, got {val!r}"
        )
    if k >= n:
        raise ManifestError(f"cannot hold out {k} of {n} speakers and keep any for training")
    perm = np.random.default_rng(seed).permutation(n)
    held = {speakers[i] for i in perm[:k]}
    return [u for u in utts if u.speaker not in held], [u for u in utts if u.speaker in held]


def scan_source(
    source: str | Path,
    layout: str = "auto",
    *,
    dataset: str | None = None,
    with_durations: bool = False,
) -> list[Utterance]:
    """The one dispatcher from a user's ``--data-root``/``--layout`` to a list of utterances.

    ``source`` is one or more comma-separated entries, each optionally ``PATH@LAYOUT`` (the
    entry's own layout wins over ``layout``). An entry is a manifest CSV, a tree
    (:data:`TREE_LAYOUTS`), a flat folder whose file names carry the speaker (a
    :data:`FILENAME_PATTERNS` name; ``dataset`` names it, default the folder name), or with
    ``files`` (:data:`FILES_LAYOUT`) unlabelled audio: every file, each its own speaker.
    """
    utts: list[Utterance] = []
    for entry in str(source).split(","):
        path, _, own = entry.partition("@")
        root, lay = Path(path), own or layout
        if root.suffix == ".csv":
            utts += read_manifest_csv(root)
        elif lay in TREE_LAYOUTS:
            if dataset:
                raise ManifestError("a dataset name applies to file-name patterns; trees name it")
            utts += scan_tree(root, layout=lay, with_durations=with_durations)
        elif lay in FILENAME_PATTERNS:
            utts += scan_filename_pattern(root, lay, dataset=dataset, with_durations=with_durations)
        elif lay == FILES_LAYOUT:
            utts += scan_files(root, dataset=dataset, with_durations=with_durations)
        else:
            raise ManifestError(
                f"unknown layout {lay!r}; use one of {list(TREE_LAYOUTS)}, {FILES_LAYOUT!r} "
                f"(unlabelled files) or a file-name pattern {sorted(FILENAME_PATTERNS)}"
            )
    return utts

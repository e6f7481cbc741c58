"""3D-Speaker's CSV manifests (``data/<name>/train.csv`` of its recipes) -> utterances.

3D-Speaker's ``egs/*/sv-*/local/prepare_data_csv.py`` (modelscope/3D-Speaker; read to learn the
format, not copied) writes, from a Kaldi ``wav.scp`` + ``utt2spk`` of data dir ``<name>``::

    ID,dur,path,start,stop,spk
    id10001-1zcIwhmdeo4-00001_vox1_dev_0.0_3.0,8.12,/data/vox1/id10001/1zcIwhmdeo4/00001.wav,0.0,3.0,id10001_vox1_dev
    id10001-1zcIwhmdeo4-00001_vox1_dev_3.0_6.0,8.12,/data/vox1/id10001/1zcIwhmdeo4/00001.wav,3.0,6.0,id10001_vox1_dev

``ID`` and ``spk`` carry the suffix ``_<name>``; ``dur`` is the file's duration in seconds and
``start``/``stop`` (seconds) the fixed ``seg_dur`` chunk of the row (with ``--random_seg`` one
row per file, ``0`` to ``dur``); its loader (``speakerlab.utils.fileio.load_data_csv``) keys rows
by ``ID`` and reads ``path`` and ``spk``.

Mapping: the rows of one ``path`` become one :class:`~datasets.manifests.Utterance` of the whole
file (voxray crops utterances at training time, so 3D-Speaker's pre-cut chunks are one cropping of
it; keeping them apart would repeat each file once per chunk); ``dataset`` = ``<name>`` (the suffix
shared by the ``spk`` values, else the CSV's folder name); ``speaker`` = ``spk`` without the
suffix; ``utterance`` = ``ID`` without the suffix and chunk bounds; ``duration`` = ``dur``.
Relative paths are relative to the CSV's folder. Other columns are ignored, as speakerlab does.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from datasets.manifests import ManifestError, Utterance, _finish, _utt

log = logging.getLogger(__name__)

COLUMNS = ("ID", "path", "spk")  # what speakerlab reads; dur/start/stop are optional here


def is_3dspeaker_header(header: Sequence[str]) -> bool:
    return all(c in header for c in COLUMNS)


def _suffix(speakers: list[str], fallback: str) -> str:
    """The ``<name>`` that every ``spk`` ends with as ``_<name>``, else ``fallback``."""
    if fallback and all(s.endswith(f"_{fallback}") for s in speakers):
        return fallback
    first = speakers[0].split("_")
    for i in range(1, len(first)):  # longest common suffix of '_'-separated parts
        cand = "_".join(first[i:])
        if all(s.endswith(f"_{cand}") and len(s) > len(cand) + 1 for s in speakers):
            return cand
    return ""


def _strip_chunk(utt_id: str, start: str, stop: str) -> str:
    """``<id>_<start>_<stop>`` -> ``<id>`` when the row's bounds are the ID's tail."""
    tail = f"_{start}_{stop}"
    return utt_id[: -len(tail)] if start and stop and utt_id.endswith(tail) else utt_id


def read_3dspeaker_csv(path: str | Path) -> list[Utterance]:
    """Utterances of a 3D-Speaker CSV manifest (see the module docstring)."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        rows = list(enumerate(reader, 2))
    if not rows:
        raise ManifestError(f"{path}: a 3D-Speaker CSV without rows")
    name = _suffix([r["spk"] for _, r in rows], path.parent.name)
    dataset = name or path.parent.name or "3dspeaker"
    by_path: dict[str, Utterance] = {}
    chunks = 0
    for lineno, row in rows:
        if not row.get("ID") or not row.get("path") or not row.get("spk"):
            raise ManifestError(f"{path}:{lineno}: empty ID, path or spk in {row}")
        audio = row["path"] if os.path.isabs(row["path"]) else str(path.parent / row["path"])
        utt_id = _strip_chunk(row["ID"], row.get("start") or "", row.get("stop") or "")
        speaker = row["spk"]
        if name:
            utt_id = utt_id.removesuffix(f"_{name}")
            speaker = speaker.removesuffix(f"_{name}")
        try:
            dur = float(row["dur"]) if row.get("dur") else None
        except ValueError as exc:
            raise ManifestError(f"{path}:{lineno}: bad dur {row['dur']!r}") from exc
        seen = by_path.get(audio)
        if seen is not None:
            if seen.speaker != speaker:
                raise ManifestError(
                    f"{path}:{lineno}: {audio} is speaker {speaker!r} here and "
                    f"{seen.speaker!r} on an earlier row"
                )
            chunks += 1
            continue
        u = _utt(Path(audio), dataset, speaker, utt_id.replace("/", "-"))
        by_path[audio] = Utterance(u.key, u.path, u.dataset, u.speaker, u.utterance, dur)
    if chunks:
        log.info("%s: %d chunk rows merged into the %d files they cut", path, chunks, len(by_path))
    return _finish(list(by_path.values()), str(path), False)

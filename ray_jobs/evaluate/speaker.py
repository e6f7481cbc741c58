"""Speaker-embedder evaluation core (Ray-free, no CLI): EER and minDCF on a labelled tree.

Every utterance needed is embedded once (``SpeakerEmbedder.embed_batch`` on duration-sorted
chunks, so equal-length clips share a forward pass), then trials are scored by cosine:

- a trials file, one trial per line, ``<label> <enroll> <test>`` (VoxCeleb:
  ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``) or Kaldi's
  ``<enroll> <test> <label>``; labels ``1``/``0`` or ``target``/``nontarget``. Utterances are
  named by manifest key (``dataset_speaker_utterance``) or by a path relative to the data root
  or to any folder below it (with or without the extension);
- otherwise all same/different-speaker pairs of the tree when there are at most
  ``max_trials``, else a seeded subsample of ``max_trials`` pairs, half same-speaker.

:func:`evaluate_tree` is what the training job (``ray_jobs/train/data/speaker.py``) and the CLI
(``ray_jobs/evaluate/cli/speaker.py``) call. One process is enough for evaluation-sized trees;
sharded extraction at scale is ``ray_jobs/extract``'s job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from datasets.manifests import Utterance
from models.calibration import ScoreNorm, calibration_from_metrics, write_calibration
from models.metrics import verification_metrics
from models.pipelines.scoring import (
    DEFAULT_MAX_TRIALS,
    as_norm,
    cohort_stats,
    cosine_pairs,
    make_pairs,
)
from models.pipelines.speaker import SpeakerEmbedder

log = logging.getLogger("ray_jobs.evaluate.speaker")

DEFAULT_ASNORM_TOPK = 100  # cohort scores per side (WeSpeaker uses 300 on VoxCeleb's 7k cohort)
SCORES_FILE = "scores.tsv"
DET_FILE = "det.png"
HIST_FILE = "scores_hist.png"
_LABELS = {"1": True, "0": False, "target": True, "nontarget": False}


@dataclass(frozen=True)
class Trial:
    enroll: str  # utterance key or relative path, as written in the trials file
    test: str
    target: bool  # True = same speaker


def parse_trials(lines: Sequence[str], source: str = "trials") -> list[Trial]:
    """Parse trial lines (``label enroll test`` or ``enroll test label``; see module doc)."""
    trials = []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 3:
            raise ValueError(
                f"{source}:{lineno}: expected '<label> <enroll> <test>', got {line.strip()!r}"
            )
        if parts[0].lower() in _LABELS:
            label, enroll, test = parts
        elif parts[2].lower() in _LABELS:
            enroll, test, label = parts
        else:
            raise ValueError(
                f"{source}:{lineno}: no label in {line.strip()!r}; use 1/0 or target/nontarget"
            )
        trials.append(Trial(enroll=enroll, test=test, target=_LABELS[label.lower()]))
    if not trials:
        raise ValueError(f"{source}: no trials found")
    return trials


def read_trials(path: str | Path) -> list[Trial]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trials file {path} does not exist")
    with path.open(encoding="utf-8") as fh:
        return parse_trials(fh.readlines(), source=str(path))


_AMBIGUOUS = -1


def _alias_index(utterances: Sequence[Utterance]) -> dict[str, int]:
    """Name -> utterance index: the key, and the last 1-4 path components with and without the
    extension (``id10270/x6uYqmx31kE/00001.wav``). Names shared by several utterances map to
    ``_AMBIGUOUS`` and fail only when a trial uses them."""
    index: dict[str, int] = {}

    def add(name: str, i: int) -> None:
        prev = index.get(name)
        index[name] = i if prev is None or prev == i else _AMBIGUOUS

    for i, u in enumerate(utterances):
        add(u.key, i)
        parts = Path(u.path).parts
        for n in range(1, min(4, len(parts)) + 1):
            tail = Path(*parts[-n:])
            add(tail.as_posix(), i)
            add(tail.with_suffix("").as_posix(), i)
    return index


def _resolve(trials: Sequence[Trial], utterances: Sequence[Utterance]) -> np.ndarray:
    """Trials -> ``(N, 2)`` utterance indices; raises naming the first unresolved names."""
    index = _alias_index(utterances)
    pairs = np.empty((len(trials), 2), dtype=np.int64)
    missing, ambiguous = [], []
    for t, trial in enumerate(trials):
        for c, name in enumerate((trial.enroll, trial.test)):
            i = index.get(name.strip("/").removeprefix("./"))
            if i is None:
                missing.append(name)
            elif i == _AMBIGUOUS:
                ambiguous.append(name)
            else:
                pairs[t, c] = i
    if missing or ambiguous:
        msg = []
        if missing:
            msg.append(f"{len(missing)} name(s) not in the data tree, e.g. {missing[:3]}")
        if ambiguous:
            msg.append(f"{len(ambiguous)} ambiguous name(s), e.g. {ambiguous[:3]}")
        raise ValueError(
            "trials do not match the data tree: " + "; ".join(msg) + ". Name utterances by "
            "manifest key (dataset_speaker_utterance) or by a longer relative path, and check "
            "--data-root / --layout."
        )
    return pairs


def embed_utterances(
    embedder: SpeakerEmbedder, utterances: Sequence[Utterance], chunk_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Embed each utterance once -> ``(emb (N, D) float32, ok (N,) bool)``.

    Utterances are processed in duration-sorted chunks (equal-length clips batch together);
    unreadable or too-short ones are logged and marked ``ok=False`` (their row is zero).
    """
    n = len(utterances)
    emb = np.zeros((n, embedder.embed_dim), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    order = sorted(range(n), key=lambda k: (utterances[k].duration or 0.0, utterances[k].path))
    sr = embedder.sample_rate
    for start in range(0, n, chunk_size):
        idx, wavs = [], []
        for k in order[start : start + chunk_size]:
            try:
                wav, _ = load_audio(utterances[k].path, target_sr=sr)
            except AudioError as exc:
                log.warning("skipping %s: %s", utterances[k].key, exc)
                continue
            idx.append(k)
            wavs.append(wav)
        if not idx:
            continue
        try:
            emb[idx] = embedder.embed_batch(wavs, sr)
            ok[idx] = True
        except AudioError:  # find the bad clip(s) one by one
            for k, wav in zip(idx, wavs, strict=True):
                try:
                    emb[k] = embedder.embed(wav, sr)
                    ok[k] = True
                except AudioError as exc:
                    log.warning("skipping %s: %s", utterances[k].key, exc)
        log.info("embedded %d / %d utterances", min(start + chunk_size, n), n)
    return emb, ok


def evaluate_tree(
    embedder: SpeakerEmbedder,
    utterances: Sequence[Utterance],
    trials: Sequence[Trial] | None = None,
    max_trials: int = DEFAULT_MAX_TRIALS,
    seed: int = 0,
    *,
    chunk_size: int = 64,
    cohort: np.ndarray | None = None,
    asnorm_topk: int = DEFAULT_ASNORM_TOPK,
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Embed, score and measure: ``verification_metrics`` keys plus bookkeeping.

    ``cohort: (C, D)`` unit rows (``datasets.cohort.load_cohort``) adds AS-norm: the result's
    ``asnorm`` key holds ``verification_metrics`` of the normalised scores (top ``asnorm_topk``
    cohort scores per side) and ``score_norm`` its settings. ``report_dir`` gets the per-trial
    scores (``scores.tsv``, :func:`write_scores`) and the pictures of :func:`write_plots`
    (``det.png``, ``scores_hist.png``); their paths are under the result's ``report`` key.

    ``trials=None`` scores same/different pairs of ``utterances`` (see
    :func:`models.pipelines.scoring.make_pairs`);
    otherwise only the utterances the trials name are embedded, and trials touching an
    utterance that could not be embedded are dropped (counted in ``num_dropped_trials``).
    Extra keys: ``model_id``, ``trials_source`` (``file``, ``all_pairs`` or ``sampled_pairs``),
    ``num_utterances``, ``num_failed_utterances``, ``num_speakers``, ``num_dropped_trials``,
    ``embed_seconds``.
    """
    if max_trials < 2:
        raise ValueError(f"max_trials must be >= 2, got {max_trials}")
    utterances = list(utterances)
    if trials is not None:
        pairs = _resolve(trials, utterances)
        target = np.array([t.target for t in trials], dtype=bool)
        used = np.unique(pairs)
        source = "file"
    else:
        speakers = [f"{u.dataset}/{u.speaker}" for u in utterances]
        if len(set(speakers)) < 2:
            raise ValueError(
                f"the data tree has {len(set(speakers))} speaker(s); evaluation needs at least 2 "
                "(check --data-root and --layout)"
            )
        used = np.arange(len(utterances))

    t0 = time.perf_counter()
    emb_used, ok_used = embed_utterances(embedder, [utterances[k] for k in used], chunk_size)
    embed_seconds = time.perf_counter() - t0
    emb = np.zeros((len(utterances), emb_used.shape[1]), dtype=np.float32)
    ok = np.zeros(len(utterances), dtype=bool)
    emb[used], ok[used] = emb_used, ok_used

    dropped = 0
    if trials is None:
        valid = np.flatnonzero(ok)
        pairs, target = make_pairs([speakers[k] for k in valid], max_trials=max_trials, seed=seed)
        pairs = valid[pairs]
        source = (
            "all_pairs" if len(pairs) == len(valid) * (len(valid) - 1) // 2 else "sampled_pairs"
        )
    else:
        keep = ok[pairs].all(axis=1)
        dropped = int((~keep).sum())
        if dropped:
            log.warning("dropping %d trial(s) whose audio could not be embedded", dropped)
        pairs, target = pairs[keep], target[keep]

    scores = cosine_pairs(emb[pairs[:, 0]], emb[pairs[:, 1]])
    result: dict[str, Any] = verification_metrics(scores, target)
    normed = None
    if cohort is not None:
        stats = cohort_stats(emb[used][ok[used]], cohort, asnorm_topk)  # each utterance once
        row = np.full(len(utterances), -1, dtype=np.int64)
        row[used[ok[used]]] = np.arange(stats[0].size)
        mu, sd = stats
        e, t = row[pairs[:, 0]], row[pairs[:, 1]]
        normed = as_norm(scores, (mu[e], sd[e]), (mu[t], sd[t]))
        result["asnorm"] = verification_metrics(normed, target)
        result["score_norm"] = {
            "method": "asnorm",
            "top_k": int(min(asnorm_topk, cohort.shape[0])),
            "cohort_size": int(cohort.shape[0]),
        }
    if report_dir is not None:
        keys = [u.key for u in utterances]
        report_dir = Path(report_dir)
        tsv = write_scores(report_dir / SCORES_FILE, keys, pairs, target, scores, normed)
        result["scores_file"] = str(tsv)
        result["report"] = {
            "scores": str(tsv),
            **write_plots(report_dir, scores, target, result, model_id=embedder.model_id),
        }
    result.update(
        model_id=embedder.model_id,
        trials_source=source,
        num_utterances=int(used.size),
        num_failed_utterances=int((~ok_used).sum()),
        num_speakers=len({f"{utterances[k].dataset}/{utterances[k].speaker}" for k in used}),
        num_dropped_trials=dropped,
        embed_seconds=round(embed_seconds, 3),
    )
    return result


def write_plots(
    report_dir: str | Path,
    scores: np.ndarray,
    target: np.ndarray,
    metrics: dict[str, Any],
    *,
    model_id: str = "",
) -> dict[str, str]:
    """``det.png`` (DET curve, EER and minDCF(0.01) marked) and ``scores_hist.png`` (target vs
    non-target scores with the EER and minDCF thresholds) in ``report_dir``; returns
    ``{"det": path, "histogram": path}``."""
    from ray_jobs.plots import det_png, score_histogram_png

    report_dir = Path(report_dir)
    name = f" ({model_id})" if model_id else ""
    det = det_png(scores, target, report_dir / DET_FILE, title=f"DET{name}")
    thresholds = {
        "EER threshold": metrics["eer_threshold"],
        "minDCF(0.01) threshold": metrics["min_dcf_0.01_threshold"],
    }
    hist = score_histogram_png(
        scores, target, report_dir / HIST_FILE, thresholds=thresholds, title=f"scores{name}"
    )
    return {"det": str(det), "histogram": str(hist)}


def write_scores(
    path: str | Path,
    keys: Sequence[str],
    pairs: np.ndarray,
    target: np.ndarray,
    scores: np.ndarray,
    normed: np.ndarray | None = None,
) -> Path:
    """Per-trial scores, tab-separated with a header: ``enroll test label score[ asnorm]``
    (label 1 = same speaker; names are manifest keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "enroll\ttest\tlabel\tscore" + ("\tasnorm" if normed is not None else "")
    lines = [header]
    for n, (i, j) in enumerate(pairs.tolist()):
        line = f"{keys[i]}\t{keys[j]}\t{int(target[n])}\t{scores[n]:.6f}"
        if normed is not None:
            line += f"\t{normed[n]:.6f}"
        lines.append(line)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def write_calibration_record(
    checkpoint: str | Path,
    model_id: str,
    result: dict[str, Any],
    *,
    data: str,
    cohort: str | None = None,
    overwrite: bool = True,
) -> list[str]:
    """Write the thresholds of ``result`` (:func:`evaluate_tree`) into the checkpoint's
    calibration record (``models.calibration``): the ``none`` entry, and the ``asnorm`` entry
    when AS-norm was measured. ``overwrite=False`` keeps entries already there. Returns the
    normalisations written."""
    measured = [("none", result, ScoreNorm())]
    if "asnorm" in result:
        sn = result["score_norm"]
        norm = ScoreNorm("asnorm", sn["top_k"], cohort, sn["cohort_size"])
        measured.append(("asnorm", result["asnorm"], norm))
    written = []
    for name, metrics, norm in measured:
        cal = calibration_from_metrics(
            {**metrics, "trials_source": result.get("trials_source", "")},
            data=data,
            score_norm=norm,
        )
        path, done = write_calibration(checkpoint, model_id, cal, overwrite=overwrite)
        if done:
            written.append(name)
            log.info("calibration (%s) written to %s", name, path)
    return written

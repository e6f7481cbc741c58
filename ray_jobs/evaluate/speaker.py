"""The one evaluation entry point; for speaker embedders: EER and minDCF on a labelled tree.

A TSE, codec or classifier checkpoint is handed to its family's evaluator
(``ray_jobs/evaluate_tse.py``, ``evaluate_codec.py``, ``evaluate_classify.py``), which takes
its own arguments (``python -m ray_jobs.evaluate --checkpoint tse.pt --help``).

    python -m ray_jobs.evaluate --checkpoint runs/campplus/best.pt --data-root data/vox1_test \\
        [--trials veri_test2.txt] [--layout auto] [--max-trials 200000] [--json]

Every utterance needed is embedded once (``SpeakerEmbedder.embed_batch`` on duration-sorted
chunks, so equal-length clips share a forward pass), then trials are scored by cosine:

- ``--trials FILE``: one trial per line, ``<label> <enroll> <test>`` (VoxCeleb:
  ``1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav``) or Kaldi's
  ``<enroll> <test> <label>``; labels ``1``/``0`` or ``target``/``nontarget``. Utterances are
  named by manifest key (``dataset_speaker_utterance``) or by a path relative to the data root
  or to any folder below it (with or without the extension);
- otherwise all same/different-speaker pairs of the tree when there are at most
  ``--max-trials``, else a seeded subsample of ``max_trials`` pairs, half same-speaker.

The core, :func:`evaluate_tree`, is Ray-free so the training job calls it in-process; this file
imports no Ray (one process is enough for evaluation-sized trees; sharded extraction at scale is
``ray_jobs/extract.py``'s job). Output: a readable report, or with ``--json`` exactly one JSON
object on stdout (logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from datasets.manifests import Utterance, scan_source
from models.metrics import verification_metrics
from models.pipelines.speaker import AudioInputError, SpeakerEmbedder
from ray_jobs.cli import configure_cli_logging

log = logging.getLogger("ray_jobs.evaluate.speaker")

DEFAULT_MAX_TRIALS = 200_000
_ENUMERATE_MAX = 10_000_000  # pairs; above this, subsampling never enumerates all pairs
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


def _unique_pairs(rng: np.random.Generator, n_want: int, n: int, draw) -> np.ndarray:
    """Draw distinct unordered pairs ``(i < j)`` from ``draw(k) -> (i, j)`` until ``n_want``."""
    codes = np.empty(0, dtype=np.int64)
    while codes.size < n_want:
        i, j = draw(2 * (n_want - codes.size) + 64)
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        new = np.concatenate([codes, lo * n + hi])
        _, first = np.unique(new, return_index=True)
        codes = new[np.sort(first)]  # dedupe, keeping draw order so truncation stays random
    codes = codes[:n_want]
    return np.stack([codes // n, codes % n], axis=1)


def make_pairs(
    speakers: Sequence[Any], max_trials: int = DEFAULT_MAX_TRIALS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Trials over one utterance list: ``(pairs (N, 2) int64, target (N,) bool)``.

    All unordered pairs when there are at most ``max_trials``; otherwise a subsample seeded by
    ``seed``: ``max_trials // 2`` same-speaker pairs (or all of them, if fewer) and the rest
    different-speaker pairs, each drawn uniformly without replacement. EER and minDCF depend on
    per-class error rates only, so the balance does not bias them.
    """
    spk = np.unique(np.asarray(speakers), return_inverse=True)[1].astype(np.int64)
    n = spk.size
    if np.unique(spk).size < 2:
        raise ValueError(
            "need utterances from at least 2 speakers to form different-speaker trials"
        )
    counts = np.bincount(spk)
    n_all = n * (n - 1) // 2
    n_tar_all = int((counts * (counts - 1) // 2).sum())
    if n_tar_all == 0:
        raise ValueError("every speaker has a single utterance: no same-speaker trials possible")
    if n_all <= max_trials:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1).astype(np.int64), spk[i] == spk[j]

    rng = np.random.default_rng(seed)
    n_tar = min(max_trials // 2, n_tar_all)
    n_non = min(max_trials - n_tar, n_all - n_tar_all)
    by_spk = np.argsort(spk, kind="stable")  # utterance indices grouped by speaker
    offsets = np.concatenate([[0], np.cumsum(counts)])
    weights = counts * (counts - 1) / 2
    weights = weights / weights.sum()

    def draw_target(k: int) -> tuple[np.ndarray, np.ndarray]:
        s = rng.choice(counts.size, size=k, p=weights)  # speaker, weighted by its pair count
        a = rng.integers(0, counts[s])
        b = rng.integers(0, counts[s] - 1)
        b = b + (b >= a)  # distinct positions within the speaker
        return by_spk[offsets[s] + a], by_spk[offsets[s] + b]

    def draw_nontarget(k: int) -> tuple[np.ndarray, np.ndarray]:
        i, j = rng.integers(0, n, size=k), rng.integers(0, n, size=k)
        keep = spk[i] != spk[j]
        return i[keep], j[keep]

    def sample(want: int, available: int, same: bool, draw) -> np.ndarray:
        # Rejection sampling needs ~want draws while want is well below what is available; near
        # exhaustion it would crawl (coupon collector), so enumerate and choose instead.
        if want <= available // 2 or n_all > _ENUMERATE_MAX:
            return _unique_pairs(rng, want, n, draw)
        i, j = np.triu_indices(n, k=1)
        cls = np.flatnonzero((spk[i] == spk[j]) == same)
        pick = np.sort(rng.choice(cls, size=want, replace=False))
        return np.stack([i[pick], j[pick]], axis=1).astype(np.int64)

    tar = sample(n_tar, n_tar_all, True, draw_target)
    non = sample(n_non, n_all - n_tar_all, False, draw_nontarget)
    pairs = np.concatenate([tar, non])
    target = np.concatenate([np.ones(len(tar), bool), np.zeros(len(non), bool)])
    return pairs, target


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
        except AudioInputError:  # find the bad clip(s) one by one
            for k, wav in zip(idx, wavs, strict=True):
                try:
                    emb[k] = embedder.embed(wav, sr)
                    ok[k] = True
                except AudioInputError as exc:
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
) -> dict[str, Any]:
    """Embed, score and measure: ``verification_metrics`` keys plus bookkeeping.

    ``trials=None`` scores same/different pairs of ``utterances`` (see :func:`make_pairs`);
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

    scores = np.einsum("nd,nd->n", emb[pairs[:, 0]], emb[pairs[:, 1]])  # cosine: unit vectors
    result: dict[str, Any] = verification_metrics(scores, target)
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


def format_report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"model       {result['model_id']}",
            f"utterances  {result['num_utterances']} ({result['num_speakers']} speakers, "
            f"{result['num_failed_utterances']} failed)",
            f"trials      {result['num_trials']} ({result['num_target']} target, "
            f"{result['num_nontarget']} non-target; {result['trials_source']})",
            f"EER         {100 * result['eer']:.3f} %  (threshold {result['eer_threshold']:.4f})",
            f"minDCF      p=0.01: {result['min_dcf_0.01']:.4f}   "
            f"p=0.05: {result['min_dcf_0.05']:.4f}",
        ]
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ray_jobs.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="voxray speaker-model checkpoint (.pt) or an exported ONNX model (.onnx)",
    )
    p.add_argument("--data-root", required=True, help="labelled tree: [dataset/]speaker/utt.wav")
    p.add_argument("--trials", help="trials file; default: same/different pairs of the tree")
    p.add_argument(
        "--layout",
        default="auto",
        help="auto, dataset/speaker/utt, speaker/utt, or a file-name pattern (librispeech, fsdd, "
        "cmu-arctic); --data-root also takes comma-separated PATH@LAYOUT sources",
    )
    p.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    p.add_argument("--seed", type=int, default=0, help="seed of the pair subsample")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--min-seconds", type=float, default=0.0, help="skip shorter utterances")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    return p


# Evaluation of the other model families, by the checkpoint's family: same entry point.
FAMILY_EVALUATORS = {
    "tse": "ray_jobs.evaluate.tse",
    "codec": "ray_jobs.evaluate.codec",
    "classify": "ray_jobs.evaluate.classify",
}


def checkpoint_family(path: str | Path) -> str:
    """``speaker`` / ``tse`` / ``codec`` / ``classify`` of a voxray checkpoint (.onnx: speaker)."""
    path = Path(path)
    if path.suffix == ".onnx" or not path.is_file():
        return "speaker"  # exported embedders; a missing file is reported by the speaker path
    from models.checkpoint import read_checkpoint
    from models.registry import get_entry

    return get_entry(read_checkpoint(path)["model_name"]).family


def _delegate(argv: Sequence[str] | None) -> int | None:
    """Run the family's evaluator when ``--checkpoint`` is not a speaker embedder."""
    import importlib

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--checkpoint")
    known, _ = pre.parse_known_args(argv)
    if not known.checkpoint:
        return None
    try:
        family = checkpoint_family(known.checkpoint)
    except (ValueError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    if family not in FAMILY_EVALUATORS:
        return None
    return importlib.import_module(FAMILY_EVALUATORS[family]).main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    delegated = _delegate(sys.argv[1:] if argv is None else argv)
    if delegated is not None:
        return delegated
    args = build_parser().parse_args(argv)
    configure_cli_logging()
    try:
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        if ckpt.suffix == ".onnx":  # an exported model (ray_jobs.export), FP32 or INT8
            from models.pipelines.onnx_backend import OnnxSpeakerEmbedder

            embedder = OnnxSpeakerEmbedder.from_file(ckpt, min_seconds=args.min_seconds)
        else:
            embedder = SpeakerEmbedder.from_checkpoint(
                ckpt, device=args.device, min_seconds=args.min_seconds
            )
        utterances = scan_source(args.data_root, args.layout, with_durations=True)
        trials = read_trials(args.trials) if args.trials else None
        log.info(
            "evaluating %s on %d utterances from %s",
            embedder.model_id,
            len(utterances),
            args.data_root,
        )
        result = evaluate_tree(
            embedder, utterances, trials, max_trials=args.max_trials, seed=args.seed
        )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        # ValueError covers CheckpointError, ManifestError, AudioError and ConfigError
        log.error("%s", exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
        return 2
    result["checkpoint"] = str(args.checkpoint)
    result["data_root"] = str(args.data_root)
    if args.json:
        print(json.dumps({k: _json_safe(v) for k, v in result.items()}, sort_keys=True))
    else:
        print(format_report(result))
    return 0

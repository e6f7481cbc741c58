"""Target-speaker-extraction evaluation core (Ray-free, no CLI): held-out dynamic mixtures.

The CLI is ``ray_jobs/evaluate/cli/tse.py`` (``python -m ray_jobs.evaluate --checkpoint tse.pt``).

Mixtures are built by ``datasets.mixing.DynamicMixer`` over the speakers of ``--data-root``
(any layout ``datasets.manifests.scan_source`` reads; decoded at the model's rate, 48 kHz, with
``datasets.audio.load_audio`` into a ``MemoryPool``), with the recipe of training
(``MixConfig``: interferers, SIR/SNR, RIRs, target-absent mixtures) and the same held-out seed
stream as ``ray_jobs/train/data/tse.py`` (``make_eval_set``). Each mixture goes through
``TargetExtractor`` (reference encoded once, chunked long-file inference).

The protocol follows the TSE literature's objective evaluation (SpeakerBeam, Zmolikova et al.
2019, and USEF-TSE, Zeng et al. 2024, arXiv 2409.02615: SI-SDR / SI-SDRi, PESQ, STOI on
target-present mixtures) plus the target-absent case of Borsdorf et al. 2021 ("Universal speaker
extraction in the presence and absence of target speakers", Interspeech): how many dB of the
mixture the extractor removes when the enrolled speaker is not there. PESQ-WB (ITU-T P.862.2)
and STOI (Taal et al. 2011) are computed on 16 kHz down-sampled copies, for the extracted signal
and, as the baseline it should beat, for the unprocessed mixture.

:func:`evaluate_samples` is Ray-free; the training job (``ray_jobs/train/data/tse.py``) calls it on
its held-out set at the end of a run.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio import AudioError, load_audio
from datasets.manifests import scan_source
from datasets.mixing import MixSample
from datasets.speech_pools import MemoryPool
from models.metrics import absent_suppression_db, signal_quality
from models.pipelines.tse import TargetExtractor
from models.waveform import resample

log = logging.getLogger("ray_jobs.evaluate.tse")

_MEANS = ("si_sdr", "si_sdri", "pesq", "stoi", "mix_si_sdr", "mix_pesq", "mix_stoi")


def _mean(values: list[float]) -> float | None:
    """Mean over finite values (PESQ gives NaN on unscorable pairs); None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def evaluate_samples(
    extractor: TargetExtractor,
    samples: list[MixSample],
    *,
    sample_rate: int | None = None,
    per_sample: bool = False,
    keep_estimates: int = 0,
) -> dict[str, Any]:
    """Extract the target of every mixture and score it.

    ``samples``: ``MixSample`` at ``sample_rate`` Hz (default: the extractor's, 48 kHz).
    Returns ``num_mixes``, ``num_present``, ``num_absent``; over target-present mixtures the
    means of ``si_sdr``, ``si_sdri`` (dB), ``pesq`` (MOS-LQO), ``stoi`` ([0, 1]) and the
    unprocessed mixture's ``mix_si_sdr``, ``mix_pesq``, ``mix_stoi``; over target-absent ones
    ``absent_suppression_db`` (higher = more of the mixture removed). A mean with no samples is
    ``None``. ``pesq_failed`` counts pairs PESQ could not score (left out of the mean);
    ``real_time_factor`` is extraction time over audio time. ``per_sample=True`` adds
    ``samples``: one dict of metrics per mixture. ``keep_estimates=k`` adds ``estimates``: the
    extracted ``(T,)`` signals of the first ``k`` mixtures (for :func:`write_listening_report`).
    """
    sr = int(sample_rate or extractor.sample_rate)
    sums: dict[str, list[float]] = {k: [] for k in _MEANS}
    absent: list[float] = []
    rows: list[dict[str, Any]] = []
    estimates: list[np.ndarray] = []
    pesq_failed = 0
    busy = audio = 0.0
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        est = extractor(s.mix, sr, s.ref, sr)
        busy += time.perf_counter() - t0
        audio += s.mix.shape[-1] / sr
        if est.shape[0] != s.mix.shape[0]:  # resampling rounding when sr != model rate
            est = resample(est, extractor.sample_rate, sr)[: s.mix.shape[0]]
        if i < keep_estimates:
            estimates.append(est)
        row: dict[str, Any] = {"index": i, "present": bool(s.present)}
        if s.present:
            q = signal_quality(est, s.target, sr)
            m = signal_quality(s.mix, s.target, sr)  # the unprocessed mixture, for reference
            row.update(q, si_sdri=q["si_sdr"] - m["si_sdr"])
            row.update({f"mix_{k}": v for k, v in m.items()})
            pesq_failed += int(not math.isfinite(row["pesq"]))
            for k in _MEANS:
                sums[k].append(row[k])
        else:
            row["absent_suppression_db"] = absent_suppression_db(est, s.mix)
            absent.append(row["absent_suppression_db"])
        rows.append(row)
    out: dict[str, Any] = {
        "num_mixes": len(samples),
        "num_present": len(sums["si_sdr"]),
        "num_absent": len(absent),
        **{k: _mean(v) for k, v in sums.items()},
        "absent_suppression_db": _mean(absent),
        "pesq_failed": pesq_failed,
        "sample_rate": sr,
        "real_time_factor": busy / audio if audio > 0 else None,
    }
    if per_sample or keep_estimates:
        out["samples"] = rows
    if keep_estimates:
        out["estimates"] = estimates
    return out


_PAGE_METRICS = ("si_sdr", "si_sdri", "pesq", "stoi", "absent_suppression_db")


def write_listening_report(
    out_dir: str | Path,
    samples: list[MixSample],
    result: dict[str, Any],
    *,
    title: str = "TSE evaluation",
) -> Path:
    """A listening page (``ray_jobs/evaluate/listening.py``) of the mixtures whose estimates
    ``result`` kept (:func:`evaluate_samples` with ``keep_estimates``): mixture (the baseline),
    extracted, clean target and enrollment, with players, spectrograms and the metrics of each
    mixture; returns the page's path."""
    from ray_jobs.evaluate.listening import ListeningClip, write_listening_page

    sr = int(result["sample_rate"])
    clips = []
    for s, est, row in zip(samples, result["estimates"], result["samples"], strict=False):
        signals = {"mixture (unprocessed)": s.mix, "extracted": est}
        metrics = {"extracted": {k: row[k] for k in _PAGE_METRICS if k in row}}
        if s.present:
            signals["clean target"] = s.target
            metrics["mixture (unprocessed)"] = {
                "si_sdr": row["mix_si_sdr"], "pesq": row["mix_pesq"], "stoi": row["mix_stoi"]
            }  # fmt: skip
        signals["enrollment"] = s.ref
        kind = "target present" if s.present else "target absent"
        clips.append(ListeningClip(f"mixture {row['index']} ({kind})", sr, signals, metrics))
    summary = (
        f"<p>{result['num_mixes']} mixtures; mean SI-SDRi {_fmt_db(result.get('si_sdri'))}, "
        f"target-absent suppression {_fmt_db(result.get('absent_suppression_db'))}.</p>"
    )
    units = {"si_sdr": "dB", "si_sdri": "dB", "absent_suppression_db": "dB", "pesq": "MOS-LQO"}
    return write_listening_page(out_dir, title, clips, summary_html=summary, units=units)


def _fmt_db(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} dB"


def load_pool(data_root: str, layout: str, sample_rate: int, max_speakers: int = 0) -> MemoryPool:
    """Speech of ``data_root`` decoded at ``sample_rate`` into a ``MemoryPool`` (by speaker)."""
    utts = scan_source(data_root, layout)
    if not utts:
        raise AudioError(f"{data_root}: no audio files found; point --data-root at speech")
    speakers = sorted({u.speaker for u in utts})
    if max_speakers > 0:
        speakers = speakers[:max_speakers]
    keep = set(speakers)
    data: dict[str, list[np.ndarray]] = {s: [] for s in speakers}
    for u in utts:
        if u.speaker in keep:
            data[u.speaker].append(load_audio(u.path, sample_rate)[0])
    log.info("loaded %d utterances of %d speakers", sum(map(len, data.values())), len(data))
    return MemoryPool(data, sample_rate=sample_rate)

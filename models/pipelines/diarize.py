"""Speaker diarization, Ray-free: VAD -> sliding-window embeddings -> clustering -> turns.

The classic clustering-based pipeline (e.g. Park et al. 2022, "A Review of Speaker Diarization",
Computer Speech & Language; Wang et al. 2018, "Speaker Diarization with LSTM", ICASSP): speech
regions from Silero VAD (``vad.py``), speaker embeddings of overlapping fixed-length windows
inside each region, spectral or agglomerative clustering of the windows (``clustering.py``),
and a resegmentation at window resolution: every 10 ms frame of speech takes the label of the
covering window whose centre is nearest, so speaker changes fall at midpoints between window
centres, not at window edges. Sliding-window inference apart from the model follows pyannote's
``core/inference.py``. The stages are public functions (``windows``, ``slice_windows``,
``assemble``) so a Serve app can run the embedder in another process and reuse the rest.

The clustering threshold (cosine distance at which clusters stop merging) comes, in this
order, from ``clustering.threshold`` when set, else from the speaker model's calibration record
(``models.calibration``; :func:`calibrated_threshold`): ``1 - (t_eer - calibration_offset)``,
where ``t_eer`` is the cosine EER threshold measured on verification trials of raw scores;
two clusters whose centroids score at least what a same-speaker verification trial needs are
one speaker. Without either it is ``clustering.DEFAULT_THRESHOLD``.

Speakers are ``SPEAKER_00``, ``SPEAKER_01``... in order of first appearance. ``name_clusters``
turns clusters into enrolled names (open-set, one-to-one Hungarian assignment).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from models.config import apply_overrides, from_dict
from models.pipelines.clustering import (
    DEFAULT_THRESHOLD,
    ClusteringConfig,
    cluster_embeddings,
)
from models.pipelines.scoring import centroid, cosine_matrix
from models.pipelines.vad import SileroVAD, VADConfig
from models.waveform import mono_float32

log = logging.getLogger(__name__)

FRAME = 0.01  # seconds; resolution of the resegmentation in `assemble`


@dataclass(frozen=True)
class DiarizationConfig:
    vad: VADConfig = field(default_factory=VADConfig)
    window_seconds: float = 1.5  # embedding window length
    hop_seconds: float = 0.75  # window step inside a speech region
    # a region (or audio) shorter than this is extended to it, centred, for its one window
    min_window_seconds: float = 0.5
    batch_size: int = 64  # windows per embed_batch call
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    min_segment_seconds: float = 0.3  # shorter turns merge into a touching neighbour, or drop
    # clustering threshold from a calibration record: 1 - (EER threshold - calibration_offset)
    calibration_offset: float = 0.0


class Embedder(Protocol):
    """What the diarizer needs from ``models.pipelines.speaker.SpeakerEmbedder``."""

    sample_rate: int
    embed_dim: int

    def embed_batch(self, wavs: list[np.ndarray], sample_rate: int) -> np.ndarray: ...


def diarization_config(
    overrides: Iterable[str] | Mapping[str, Any] = (), base: Mapping[str, Any] | None = None
) -> DiarizationConfig:
    """``["clustering.threshold=0.6", ...]`` or ``{dotted: value}`` -> a checked config.

    Unknown keys and bad types raise ``models.config.ConfigError`` naming the valid keys.
    """
    data: dict[str, Any] = copy.deepcopy(dict(base or {}))
    apply_overrides(data, overrides)
    return from_dict(DiarizationConfig, data)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float  # seconds
    speaker: str


@dataclass
class DiarizationResult:
    segments: list[Segment]  # sorted by start; one speaker at a time
    num_speakers: int
    duration: float  # seconds of input audio
    timings: dict[str, float]  # seconds spent in "vad", "embedding", "clustering"
    cluster_centroids: np.ndarray  # (K, D) each speaker's centroid (scoring.centroid)
    cluster_labels: list[str]  # label of each centroid row, len K

    def to_rttm(self, uri: str) -> str:
        """RTTM ``SPEAKER`` lines (millisecond precision) for this recording."""
        if not uri or any(c.isspace() for c in uri):
            raise ValueError(f"RTTM uri must be non-empty without whitespace, got {uri!r}")
        return "".join(
            f"SPEAKER {uri} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> "
            f"{s.speaker.replace(' ', '_')} <NA> <NA>\n"
            for s in self.segments
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: segments, speakers, counts and timings (no centroids)."""
        return {
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "speaker": s.speaker}
                for s in self.segments
            ],
            "speakers": list(self.cluster_labels),
            "num_speakers": self.num_speakers,
            "duration": self.duration,
            "timings": dict(self.timings),
        }

    def with_names(self, mapping: dict[int, str | None]) -> DiarizationResult:
        """Copy whose labels are ``mapping[k]`` for centroid row ``k`` where it is not None."""
        rename = {lab: (mapping.get(k) or lab) for k, lab in enumerate(self.cluster_labels)}
        return replace(
            self,
            segments=[replace(s, speaker=rename.get(s.speaker, s.speaker)) for s in self.segments],
            cluster_labels=[rename[lab] for lab in self.cluster_labels],
            timings=dict(self.timings),
            cluster_centroids=self.cluster_centroids.copy(),
        )


def calibrated_threshold(t_eer: float | None, offset: float = 0.0) -> float | None:
    """Clustering distance threshold from a model's calibrated cosine EER threshold ``t_eer``
    (``models.calibration.eer_threshold``; module docstring): ``1 - (t_eer - offset)``, clipped
    to ``[0.05, 1.95]``; None when ``t_eer`` is None."""
    if t_eer is None:
        return None
    return float(np.clip(1.0 - (t_eer - offset), 0.05, 1.95))


def window_speech_seconds(
    wins: list[tuple[float, float]], regions: list[tuple[float, float]]
) -> np.ndarray:
    """``(W,)`` seconds of speech each window stands for: its region's length shared equally by
    the windows centred in it (what the nearest-centre resegmentation gives it on average)."""
    centres = np.array([0.5 * (s + e) for s, e in wins])
    out = np.zeros(len(wins))
    for s, e in regions:
        inside = np.flatnonzero((centres >= s - 1e-9) & (centres <= e + 1e-9) & (out == 0))
        if inside.size:
            out[inside] = (e - s) / inside.size
    missing = out == 0  # a window centred outside every region (should not happen): its length
    out[missing] = [wins[i][1] - wins[i][0] for i in np.flatnonzero(missing)]
    return out


def speaker_label(k: int) -> str:
    return f"SPEAKER_{k:02d}"


def windows(
    regions: list[tuple[float, float]], duration: float, cfg: DiarizationConfig
) -> list[tuple[float, float]]:
    """Embedding windows ``[(start_s, end_s), ...]`` covering every speech region.

    A region at least ``window_seconds`` long gets windows of exactly that length every
    ``hop_seconds``, the last one aligned to the region's end (so every window of a long region
    has the same length and batches exactly). A shorter region gets one window covering it,
    extended symmetrically to ``min_window_seconds`` (within ``[0, duration]``) when shorter.
    """
    if cfg.window_seconds <= 0 or cfg.hop_seconds <= 0:
        raise ValueError("window_seconds and hop_seconds must be > 0")
    out: list[tuple[float, float]] = []
    w, hop = cfg.window_seconds, cfg.hop_seconds
    for start, end in regions:
        length = end - start
        if length <= 0:
            continue
        if length >= w:
            n = int(np.floor((length - w) / hop + 1e-9)) + 1
            starts = [start + i * hop for i in range(n)]
            if starts[-1] + w < end - 1e-6:  # tail not covered: one window flush with the end
                starts.append(end - w)
            out.extend((s, s + w) for s in starts)
        else:
            s, e = start, end
            if length < cfg.min_window_seconds:
                pad = 0.5 * (cfg.min_window_seconds - length)
                s, e = max(0.0, s - pad), min(duration, e + pad)
                if e - s < cfg.min_window_seconds:  # clipped at an edge: grow the other side
                    s = max(0.0, e - cfg.min_window_seconds)
                    e = min(duration, s + cfg.min_window_seconds)
            out.append((s, e))
    return out


def slice_windows(
    wav: np.ndarray, sample_rate: int, wins: list[tuple[float, float]]
) -> list[np.ndarray]:
    """Cut ``wav (T,)`` into the windows' samples; windows of one length give one clip length."""
    n = wav.shape[-1]
    clips = []
    for s, e in wins:
        a = int(round(s * sample_rate))
        length = int(round((e - s) * sample_rate))
        a = min(max(0, a), max(0, n - length))
        clips.append(wav[a : a + length])
    return clips


def _merge_touching(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        if out and out[-1].speaker == s.speaker and s.start - out[-1].end <= FRAME / 2:
            out[-1] = Segment(out[-1].start, s.end, s.speaker)
        else:
            out.append(s)
    return out


def assemble(
    wins: list[tuple[float, float]],
    labels: np.ndarray | list[int],
    duration: float,
    cfg: DiarizationConfig,
    regions: list[tuple[float, float]] | None = None,
) -> list[Segment]:
    """Windows and their cluster ids -> speaker turns (labels ``SPEAKER_NN`` by appearance).

    Each ``FRAME`` (10 ms) frame covered by a window (and inside ``regions`` when given: windows
    extended past a short region do not extend the speech) takes the label of the covering window
    whose centre is nearest. Runs of one label become turns; turns shorter than
    ``cfg.min_segment_seconds`` are absorbed by the longer touching neighbour, or dropped when
    isolated; touching same-speaker turns are merged.
    """
    return _assemble(wins, labels, duration, cfg, regions)[0]


def _assemble(
    wins: list[tuple[float, float]],
    labels: np.ndarray | list[int],
    duration: float,
    cfg: DiarizationConfig,
    regions: list[tuple[float, float]] | None,
) -> tuple[list[Segment], dict[int, int]]:
    """``assemble`` plus ``{cluster id: k}`` for the clusters that became ``SPEAKER_k``."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(wins) != labels.size:
        raise ValueError(f"{len(wins)} windows but {labels.size} labels")
    n_frames = int(np.ceil(duration / FRAME - 1e-9))
    if n_frames <= 0 or not wins:
        return [], {}
    centres_t = (np.arange(n_frames) + 0.5) * FRAME  # frame centres, seconds
    best = np.full(n_frames, np.inf)
    frame_lab = np.full(n_frames, -1, dtype=np.int64)
    for (s, e), lab in zip(wins, labels.tolist(), strict=True):
        a = max(0, int(np.floor(s / FRAME)))
        b = min(n_frames, int(np.ceil(e / FRAME)))
        dist = np.abs(centres_t[a:b] - 0.5 * (s + e))
        better = dist < best[a:b]
        best[a:b][better] = dist[better]
        frame_lab[a:b][better] = lab
    if regions is not None:
        speech = np.zeros(n_frames, dtype=bool)
        for s, e in regions:
            speech[int(round(s / FRAME)) : int(round(e / FRAME))] = True
        frame_lab[~speech] = -1
    # runs of equal labels -> (start, end, label)
    change = np.flatnonzero(np.diff(frame_lab)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n_frames]])
    runs = [
        [int(a), int(b), int(frame_lab[a])]
        for a, b in zip(starts, ends, strict=True)
        if frame_lab[a] >= 0
    ]
    min_frames = cfg.min_segment_seconds / FRAME
    # absorb short runs, shortest first, into the longer touching neighbour
    while True:
        short = [i for i, r in enumerate(runs) if r[1] - r[0] < min_frames - 1e-9]
        if not short:
            break
        i = min(short, key=lambda j: runs[j][1] - runs[j][0])
        prev_ok = i > 0 and runs[i - 1][1] == runs[i][0]
        next_ok = i + 1 < len(runs) and runs[i + 1][0] == runs[i][1]
        if not (prev_ok or next_ok):
            del runs[i]
            continue
        if prev_ok and (
            not next_ok or runs[i - 1][1] - runs[i - 1][0] >= runs[i + 1][1] - runs[i + 1][0]
        ):
            runs[i - 1][1] = runs[i][1]
        else:
            runs[i + 1][0] = runs[i][0]
        del runs[i]
        merged: list[list[int]] = []  # neighbours may now share a label
        for r in runs:
            if merged and merged[-1][2] == r[2] and merged[-1][1] == r[0]:
                merged[-1][1] = r[1]
            else:
                merged.append(r)
        runs = merged
    order: dict[int, int] = {}
    segs = []
    for a, b, lab in runs:
        k = order.setdefault(lab, len(order))
        end = round(min(b * FRAME, duration), 3)
        segs.append(Segment(round(a * FRAME, 3), end, speaker_label(k)))
    return _merge_touching(segs), order


def name_clusters(
    centroids: np.ndarray, gallery: dict[str, np.ndarray], threshold: float
) -> dict[int, str | None]:
    """Open-set naming: ``centroids (K, D)`` vs enrolled ``{name: (D,)}`` -> ``{k: name|None}``.

    One-to-one Hungarian assignment maximising the total cosine similarity; an assigned pair
    scoring below ``threshold`` (cosine) leaves the cluster unnamed, as does having more clusters
    than enrolled speakers.
    """
    c = np.asarray(centroids, dtype=np.float64)
    out: dict[int, str | None] = {k: None for k in range(c.shape[0])}
    if c.shape[0] == 0 or not gallery:
        return out
    names = list(gallery)
    g = np.stack([np.asarray(gallery[n], dtype=np.float64).reshape(-1) for n in names])
    if g.shape[1] != c.shape[1]:
        raise ValueError(f"gallery embeddings are {g.shape[1]}-dim, centroids {c.shape[1]}-dim")
    sim = cosine_matrix(c, g)  # (K, G)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    for r, j in zip(rows, cols, strict=True):
        if sim[r, j] >= threshold:
            out[int(r)] = names[j]
    return out


def _empty(duration: float, dim: int, timings: dict[str, float]) -> DiarizationResult:
    return DiarizationResult([], 0, duration, timings, np.zeros((0, dim), np.float32), [])


class Diarizer:
    """``wav (T,) float at sample_rate`` -> :class:`DiarizationResult`.

    ``embedder`` is a ``SpeakerEmbedder`` (or anything with ``embed_batch``, ``sample_rate`` and
    ``embed_dim``); ``vad`` defaults to ``SileroVAD(cfg.vad)``. ``verification_threshold``: the
    embedder's calibrated cosine EER threshold (``models.calibration.eer_threshold`` of its
    record), which sets the clustering threshold unless ``cfg.clustering.threshold`` does;
    ``threshold_source`` says which (``config``, ``calibration`` or ``default``).
    """

    def __init__(
        self,
        embedder: Embedder,
        vad: SileroVAD | None = None,
        cfg: DiarizationConfig = DiarizationConfig(),
        verification_threshold: float | None = None,
    ) -> None:
        if cfg.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
        self.embedder = embedder
        self.vad = vad if vad is not None else SileroVAD(cfg.vad)
        if cfg.clustering.threshold is not None:
            self.threshold_source = "config"
        else:
            thr = calibrated_threshold(verification_threshold, cfg.calibration_offset)
            self.threshold_source = "default" if thr is None else "calibration"
            thr = DEFAULT_THRESHOLD if thr is None else thr
            cfg = replace(cfg, clustering=replace(cfg.clustering, threshold=thr))
        self.cfg = cfg

    def embed_windows(
        self, wav: np.ndarray, sample_rate: int, wins: list[tuple[float, float]]
    ) -> np.ndarray:
        """``(W, D)`` embeddings of the windows, ``cfg.batch_size`` windows per call."""
        clips = slice_windows(wav, sample_rate, wins)
        parts = [
            self.embedder.embed_batch(clips[i : i + self.cfg.batch_size], sample_rate)
            for i in range(0, len(clips), self.cfg.batch_size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.embedder.embed_dim))

    def __call__(
        self,
        wav: np.ndarray,
        sample_rate: int,
        *,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
    ) -> DiarizationResult:
        x = mono_float32(wav, sample_rate, allow_empty=True).numpy()
        duration = x.size / float(sample_rate)
        timings = {"vad": 0.0, "embedding": 0.0, "clustering": 0.0}
        t0 = time.perf_counter()
        regions = self.vad(x, sample_rate) if x.size else []
        timings["vad"] = time.perf_counter() - t0
        wins = windows(regions, duration, self.cfg)
        if not wins:
            return _empty(duration, self.embedder.embed_dim, timings)
        t0 = time.perf_counter()
        emb = self.embed_windows(x, sample_rate, wins)  # (W, D)
        timings["embedding"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels = cluster_embeddings(
            emb,
            self.cfg.clustering,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            durations=window_speech_seconds(wins, regions),
        )
        timings["clustering"] = time.perf_counter() - t0
        segments, order = _assemble(wins, labels, duration, self.cfg, regions)
        speakers = [speaker_label(k) for k in range(len(order))]
        centroids = np.zeros((len(order), emb.shape[1]), dtype=np.float32)
        for cid, k in order.items():
            centroids[k] = centroid(emb[labels == cid])  # (D,)
        log.info(
            "diarized %.1f s: %d regions, %d windows, %d speakers",
            duration,
            len(regions),
            len(wins),
            len(speakers),
        )
        return DiarizationResult(segments, len(speakers), duration, timings, centroids, speakers)

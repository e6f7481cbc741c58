"""ESC-50-format sound-event folders and ACDNet's waveform preprocessing, Ray-free.

A folder holds ``audio/*.wav`` and a meta CSV (``meta/esc50.csv`` as in the ESC-50 release, or
``meta.csv`` at the root) with at least the columns ``filename,fold,target,category`` (Piczak
2015). Predefined folds give 5-fold cross-validation: :func:`folds` holds one out.

Preprocessing follows ACDNet (Mohaimenuzzaman et al., Pattern Recognition 2023, arXiv
2103.03483) and its reference implementation (mohaimenz/acdnet ``common/utils.py``,
``torch/resources/train_generator.py``, ``common/val_generator.py``; read, not copied), which
inherits EnvNet-v2's between-class (BC) learning recipe (Tokozume, Ushiku & Harada, "Learning
from Between-class Examples for Deep Sound Recognition", ICLR 2018):

- clips are read as 20 kHz mono float32 in [-1, 1] (the reference divides int16 by 32768: the
  same scale) and leading/trailing digital silence (exact zeros) is trimmed;
- training: optional random time-scale (x 1.25^U(-1, 1), linear interpolation), zero padding of
  ``input_length // 2`` on both sides, a random ``input_length`` crop; then BC mixing of two
  clips of *different* classes with ratio ``r ~ U(0, 1)``, weighted by their A-weighted gains so
  the quieter sound is still heard, label ``r * onehot(a) + (1 - r) * onehot(b)``; then a random
  gain of +-6 dB. ``mix="mixup"`` is plain mixup instead (Zhang et al. 2018: ``r ~ Beta(a, a)``,
  no gain weighting, any pair), ``mix="none"`` leaves clips unmixed with one-hot labels;
- test: the same zero padding, then ``n_crops`` (10) evenly spaced crops; the classifier
  averages its softmax outputs over the crops.

Batch helpers take and return numpy dicts so a Ray Data ``map_batches`` can wrap them.
Partners for mixing are drawn from the same batch (the reference draws from the whole training
set; with shuffled batches of 64 from 40 classes this is the same distribution in practice).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from datasets.audio import load_audio
from models.waveform import resample

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("filename", "fold", "target", "category")
META_CANDIDATES = ("meta/esc50.csv", "meta.csv")


class ESC50Error(ValueError):
    """An ESC-50-format folder that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Clip:
    path: str  # audio file path
    fold: int  # predefined cross-validation fold, 1-based
    target: int  # class index, 0-based
    category: str  # class name


class FoldSplit(NamedTuple):
    train: list[Clip]
    val: list[Clip]


@dataclass(frozen=True)
class ESC50Preprocess:
    sample_rate: int = 20000  # Hz, ACDNet's input rate
    input_length: int = 30225  # samples per crop (about 1.51 s)
    num_classes: int = 50  # size of the one-hot / soft labels
    mix: Literal["bc", "mixup", "none"] = "bc"  # BC learning (the paper's), plain mixup, none
    mixup_alpha: float = 1.0  # Beta(alpha, alpha) for mix="mixup"
    max_scale: float = 1.25  # random time-scale factor 1.25^U(-1,1); 1 disables
    gain_db: float = 6.0  # random gain U(-6, 6) dB after mixing; 0 disables
    n_crops: int = 10  # evenly spaced crops at test time

    def __post_init__(self) -> None:
        if self.mix not in ("bc", "mixup", "none"):
            raise ValueError(f"mix must be 'bc', 'mixup' or 'none', got {self.mix!r}")
        if self.n_crops < 1 or self.input_length < 1 or self.num_classes < 1:
            raise ValueError("n_crops, input_length and num_classes must be positive")


# ---------------------------------------------------------------------------------------------
# Reading the folder


def _find_meta(root: Path, meta: str | Path | None) -> Path:
    if meta is not None:
        path = Path(meta) if Path(meta).is_absolute() else root / meta
        if not path.is_file():
            raise ESC50Error(f"{path}: meta CSV not found; pass an existing file as meta=")
        return path
    for name in META_CANDIDATES:
        if (root / name).is_file():
            return root / name
    raise ESC50Error(
        f"{root}: no meta CSV ({' or '.join(META_CANDIDATES)}); an ESC-50-format folder has "
        "audio/ and a CSV with columns filename,fold,target,category"
    )


def _int_field(value: str, name: str, where: str, minimum: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ESC50Error(f"{where}: {name} {value!r} is not an integer") from None
    if out < minimum:
        raise ESC50Error(f"{where}: {name} {out} must be >= {minimum}")
    return out


def read_esc50(
    root: str | Path, meta: str | Path | None = None, audio_dir: str = "audio"
) -> list[Clip]:
    """Read an ESC-50-format folder -> clips sorted by ``(fold, filename)``.

    Validates the meta CSV (required columns, integer ``fold >= 1`` and ``target >= 0``, one
    category per target, no duplicate file names) and that every listed file exists under
    ``root/audio_dir``. Files in ``audio/`` that the CSV does not list are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise ESC50Error(f"{root}: no such folder; point at the folder holding audio/ and meta")
    meta_path = _find_meta(root, meta)
    audio_root = root / audio_dir
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    names: dict[int, tuple[str, int]] = {}
    with meta_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ESC50Error(
                f"{meta_path}: missing column(s) {', '.join(missing)} (header: "
                f"{','.join(reader.fieldnames or [])}); ESC-50 meta needs "
                f"{','.join(REQUIRED_COLUMNS)}"
            )
        for row in reader:
            line = reader.line_num
            where = f"{meta_path}:{line}"
            name = (row["filename"] or "").strip()
            if not name:
                raise ESC50Error(f"{where}: empty filename")
            if name in seen:
                raise ESC50Error(f"{where}: {name} is listed twice (first on line {seen[name]})")
            seen[name] = line
            fold = _int_field(row["fold"], "fold", where, 1)
            target = _int_field(row["target"], "target", where, 0)
            category = (row["category"] or "").strip()
            if not category:
                raise ESC50Error(f"{where}: empty category for {name}")
            if target in names and names[target][0] != category:
                raise ESC50Error(
                    f"{where}: target {target} is {category!r} here but {names[target][0]!r} on "
                    f"line {names[target][1]}; each target needs one category"
                )
            names.setdefault(target, (category, line))
            path = audio_root / name
            if not path.is_file():
                raise ESC50Error(
                    f"{where}: audio file {path} is missing; restore it or drop the row"
                )
            clips.append(Clip(str(path), fold, target, category))
    if not clips:
        raise ESC50Error(f"{meta_path}: lists no clips")
    return sorted(clips, key=lambda c: (c.fold, Path(c.path).name))


def folds(clips: Sequence[Clip], k: int) -> FoldSplit:
    """Hold out fold ``k``: ``(train = every other fold, val = fold k)``."""
    known = sorted({c.fold for c in clips})
    if k not in known:
        raise ESC50Error(f"fold {k} has no clips; the folds present are {known}")
    return FoldSplit([c for c in clips if c.fold != k], [c for c in clips if c.fold == k])


def cross_validation(clips: Sequence[Clip]) -> list[tuple[int, FoldSplit]]:
    """``[(k, folds(clips, k)) for every fold k]``: one run per held-out fold."""
    return [(k, folds(clips, k)) for k in sorted({c.fold for c in clips})]


def class_names(clips: Sequence[Clip], num_classes: int | None = None) -> list[str]:
    """Category names indexed by target (``str(target)`` for targets no clip has), for
    checkpoint ``meta["classes"]``."""
    n = num_classes if num_classes is not None else max(c.target for c in clips) + 1
    names = [str(i) for i in range(n)]
    for c in clips:
        if c.target >= n:
            raise ESC50Error(f"{c.path}: target {c.target} >= num_classes {n}")
        names[c.target] = c.category
    return names


# ---------------------------------------------------------------------------------------------
# Waveforms


def trim_silence(wav: np.ndarray) -> np.ndarray:
    """Drop leading/trailing exact zeros (ESC-50 pads short events with digital silence).
    An all-zero clip is returned unchanged."""
    nz = np.flatnonzero(wav)
    if nz.size == 0:
        return wav
    return wav[nz[0] : nz[-1] + 1]


def load_clip(path: str | Path | Clip, sample_rate: int = 20000) -> np.ndarray:
    """Read a clip -> ``(T,)`` float32 mono in [-1, 1] at ``sample_rate``, silence trimmed.

    Trimming happens before resampling, where the padding is still exact zeros."""
    path = path.path if isinstance(path, Clip) else path
    wav, sr = load_audio(path, mono=True)
    trimmed = trim_silence(wav)
    if trimmed is wav:
        log.warning("%s is entirely silent", path)
    return np.clip(resample(trimmed, sr, sample_rate), -1.0, 1.0)


def pad_for_crops(wav: np.ndarray, input_length: int) -> np.ndarray:
    """Zero-pad ``input_length // 2`` samples on both sides (the reference's padding)."""
    half = input_length // 2
    return np.pad(np.asarray(wav, dtype=np.float32), (half, half))


def random_crop(wav: np.ndarray, input_length: int, rng: np.random.Generator) -> np.ndarray:
    """Pad (:func:`pad_for_crops`), then one random ``input_length`` crop."""
    x = pad_for_crops(wav, input_length)
    if x.shape[0] < input_length:  # only for empty input
        x = np.pad(x, (0, input_length - x.shape[0]))
    start = int(rng.integers(0, x.shape[0] - input_length + 1))
    return x[start : start + input_length]


def multi_crop(wav: np.ndarray, input_length: int, n_crops: int = 10) -> np.ndarray:
    """Test-time protocol: pad, then ``n_crops`` evenly spaced crops -> ``(n_crops, input_length)``.

    Crop ``i`` starts at ``i * ((len - input_length) // (n_crops - 1))`` of the padded clip."""
    x = pad_for_crops(wav, input_length)
    if x.shape[0] < input_length:
        x = np.pad(x, (0, input_length - x.shape[0]))
    stride = (x.shape[0] - input_length) // max(1, n_crops - 1)
    return np.stack([x[i * stride : i * stride + input_length] for i in range(n_crops)])


def random_scale(wav: np.ndarray, max_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Time-scale by ``max_scale ** U(-1, 1)`` with linear interpolation (pitch changes too)."""
    scale = float(max_scale ** rng.uniform(-1.0, 1.0))
    n = max(1, int(wav.shape[0] * scale))
    pos = np.arange(n) / scale
    return np.interp(pos, np.arange(wav.shape[0]), wav).astype(np.float32)


def _a_weighting_db(sample_rate: int, n_fft: int, min_db: float = -80.0) -> np.ndarray:
    """A-weighting (IEC 61672) in dB per rfft bin, floored at ``min_db``."""
    f2 = np.linspace(0, sample_rate // 2, n_fft // 2 + 1) ** 2
    f2[0] = 1.0  # avoid log(0) at DC; the floor takes over there anyway
    ra = (12194.0**2 * f2**2) / (
        (f2 + 20.6**2) * np.sqrt((f2 + 107.7**2) * (f2 + 737.9**2)) * (f2 + 12194.0**2)
    )
    return np.maximum(20 * np.log10(ra) + 2.0, min_db)


def sound_gain_db(wav: np.ndarray, sample_rate: int, min_db: float = -80.0) -> float:
    """Loudest frame's A-weighted power in dB (Hann frames of 2048 (<= 32 kHz) or 4096 samples,
    hop half a frame): the gain BC learning balances mixtures with."""
    n_fft = 2048 if sample_rate <= 32000 else 4096
    x = np.asarray(wav, dtype=np.float64)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[:: n_fft // 2]  # (F, n_fft)
    spec = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1)) ** 2
    power = (spec * 10 ** (_a_weighting_db(sample_rate, n_fft, min_db) / 10)).sum(-1)
    return float(10 * np.log10(np.maximum(power, 10 ** (min_db / 10))).max())


def bc_mix(a: np.ndarray, b: np.ndarray, r: float, sample_rate: int) -> np.ndarray:
    """Between-class mixture of two equal-length clips (Tokozume et al. 2018, eq. 2).

    The coefficient ``p`` solves for the mixture in which ``a`` contributes the fraction ``r``
    *perceived* (A-weighted gains ``g_a``, ``g_b`` equalised), and the sum is divided by
    ``sqrt(p^2 + (1-p)^2)`` to keep the energy of the mixture near that of its parts."""
    ga, gb = sound_gain_db(a, sample_rate), sound_gain_db(b, sample_rate)
    r = float(np.clip(r, 1e-6, 1 - 1e-6))  # r = 0 or 1 would divide by zero
    p = 1.0 / (1.0 + 10 ** ((ga - gb) / 20.0) * (1.0 - r) / r)
    return ((a * p + b * (1.0 - p)) / np.sqrt(p**2 + (1.0 - p) ** 2)).astype(np.float32)


def _one_hot(targets: np.ndarray, n: int) -> np.ndarray:
    if targets.size and (targets.min() < 0 or targets.max() >= n):
        raise ESC50Error(f"targets {targets.tolist()} outside 0..{n - 1}; check num_classes")
    return np.eye(n, dtype=np.float32)[targets]


def make_training_batch(
    batch: dict[str, np.ndarray], cfg: ESC50Preprocess, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Training examples from a batch of clips (numpy in, numpy out, for ``map_batches``).

    ``batch``: ``{"wav": (N,) object array (or list) of (T_i,) float32 clips at
    cfg.sample_rate, "target": (N,) int}`` -> ``{"wav": (N, input_length) float32,
    "label": (N, num_classes) float32}`` soft labels (one-hot for ``mix="none"``).
    Each example mixes clip ``i`` with a random partner of a different class from the batch
    (any partner for plain mixup); a batch with a single class stays unmixed.
    """
    waves = list(batch["wav"])
    targets = np.asarray(batch["target"], dtype=np.int64)
    if len(waves) != targets.shape[0] or not waves:
        raise ESC50Error(f"batch has {len(waves)} clips and {targets.shape[0]} targets")
    onehot = _one_hot(targets, cfg.num_classes)

    def crop(w: np.ndarray) -> np.ndarray:
        w = np.asarray(w, dtype=np.float32)
        if cfg.max_scale > 1:
            w = random_scale(w, cfg.max_scale, rng)
        return random_crop(w, cfg.input_length, rng)

    out_wav = np.empty((len(waves), cfg.input_length), dtype=np.float32)
    out_label = onehot.copy()
    for i, w in enumerate(waves):
        x = crop(w)
        partners = (
            np.flatnonzero(targets != targets[i]) if cfg.mix == "bc" else np.arange(len(waves))
        )
        if cfg.mix != "none" and partners.size:
            j = int(rng.choice(partners))
            y = crop(waves[j])
            if cfg.mix == "bc":
                r = float(rng.uniform())
                x = bc_mix(x, y, r, cfg.sample_rate)
            else:
                r = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
                x = r * x + (1 - r) * y
            out_label[i] = r * onehot[i] + (1 - r) * onehot[j]
        if cfg.gain_db > 0:
            x = x * 10 ** (rng.uniform(-cfg.gain_db, cfg.gain_db) / 20)
        out_wav[i] = x
    return {"wav": out_wav, "label": out_label}


def make_eval_batch(batch: dict[str, np.ndarray], cfg: ESC50Preprocess) -> dict[str, np.ndarray]:
    """Test-time examples: ``{"wav": (N,) clips, "target": (N,)}`` ->
    ``{"wav": (N, n_crops, input_length) float32, "label": (N,) int64}``."""
    targets = np.asarray(batch["target"], dtype=np.int64)
    _one_hot(targets, cfg.num_classes)  # range check
    crops = [
        multi_crop(np.asarray(w, np.float32), cfg.input_length, cfg.n_crops) for w in batch["wav"]
    ]
    return {"wav": np.stack(crops).astype(np.float32), "label": targets}


def _load_batch(batch: dict[str, np.ndarray], cfg: ESC50Preprocess) -> dict[str, np.ndarray]:
    waves = np.empty(len(batch["path"]), dtype=object)
    for i, p in enumerate(batch["path"]):
        waves[i] = load_clip(str(p), cfg.sample_rate)
    return {"wav": waves, "target": np.asarray(batch["target"], dtype=np.int64)}


def training_rows(
    batch: dict[str, np.ndarray], cfg: ESC50Preprocess, seed: int | None = None
) -> dict[str, np.ndarray]:
    """``{"path": (N,), "target": (N,)}`` -> :func:`make_training_batch` output; fresh random
    crops and partners on every call unless ``seed`` is given (a Ray Data ``map_batches`` fn)."""
    rng = np.random.default_rng(seed)
    return make_training_batch(_load_batch(batch, cfg), cfg, rng)


def eval_rows(batch: dict[str, np.ndarray], cfg: ESC50Preprocess) -> dict[str, np.ndarray]:
    """``{"path": (N,), "target": (N,)}`` -> :func:`make_eval_batch` output (10-crop test)."""
    return make_eval_batch(_load_batch(batch, cfg), cfg)

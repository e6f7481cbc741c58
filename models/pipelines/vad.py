"""Voice activity detection with Silero VAD (ONNX), the first stage of diarization.

Why Silero (``silero-vad`` package, snakers4/silero-vad, MIT licence): it is a trained neural
detector (a small STFT + conv + LSTM network run on 32 ms chunks) shipped as an ONNX file inside
the wheel, so ``load_silero_vad(onnx=True)`` works offline with onnxruntime and no download. An
energy threshold needs per-recording tuning and fires on noise, music and breathing; Silero is
robust to background noise and level changes and is a common front end of open diarization
pipelines. Regions come from the package's own ``get_speech_timestamps`` (hysteresis on the
frame probabilities, minimum speech/silence durations, padding); this module only adds sample
rate handling, seconds and thread control.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.waveform import mono_float32, resample

log = logging.getLogger(__name__)

NATIVE_RATES = (8000, 16000)  # rates the Silero model runs at; others are resampled to 16 kHz


@dataclass(frozen=True)
class VADConfig:
    threshold: float = 0.5  # speech probability above which a chunk is speech
    neg_threshold: float | None = None  # end-of-speech probability (None: threshold - 0.15)
    min_speech_seconds: float = 0.25  # shorter speech bursts are dropped
    min_silence_seconds: float = 0.1  # shorter pauses do not split a region
    speech_pad_seconds: float = 0.03  # padding added on both sides of each region
    max_speech_seconds: float = float("inf")  # longer regions are split at a pause
    num_threads: int = 1  # onnxruntime intra-op threads (1: no oversubscription next to torch)


class SileroVAD:
    """``wav (T,) float at sample_rate`` -> sorted, non-overlapping speech regions in seconds.

    The ONNX model is loaded on the first call. Calls are serialised with a lock because the
    Silero wrapper keeps recurrent state between chunks: one instance is safe to share between
    threads of one process, but runs one recording at a time.
    """

    def __init__(self, cfg: VADConfig = VADConfig()) -> None:
        if not 0.0 < cfg.threshold < 1.0:
            raise ValueError(f"VAD threshold must be in (0, 1), got {cfg.threshold}")
        if cfg.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {cfg.num_threads}")
        self.cfg = cfg
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            import onnxruntime
            from silero_vad import load_silero_vad

            model = load_silero_vad(onnx=True)  # bundled ONNX file, CPU provider
            if self.cfg.num_threads != 1:  # the wrapper hard-codes 1 thread; rebuild if asked
                opts = onnxruntime.SessionOptions()
                opts.inter_op_num_threads = 1
                opts.intra_op_num_threads = self.cfg.num_threads
                path = model.session._model_path
                model.session = onnxruntime.InferenceSession(
                    path, sess_options=opts, providers=["CPUExecutionProvider"]
                )
            self._model = model
        return self._model

    def __call__(self, wav: np.ndarray, sample_rate: int) -> list[tuple[float, float]]:
        """Speech regions ``[(start_s, end_s), ...]``; empty for empty or silent audio."""
        x = mono_float32(wav, sample_rate, allow_empty=True).numpy()
        sr = int(sample_rate)
        if sr not in NATIVE_RATES:
            x = resample(x, sr, 16000)
            sr = 16000
        chunk = 512 if sr == 16000 else 256
        if x.size < chunk:  # shorter than one model chunk (32 ms): nothing to detect
            return []
        cfg = self.cfg
        with self._lock:
            from silero_vad import get_speech_timestamps

            model = self._load()
            stamps = get_speech_timestamps(
                torch.from_numpy(np.ascontiguousarray(x)),
                model,
                threshold=cfg.threshold,
                neg_threshold=cfg.neg_threshold,
                sampling_rate=sr,
                min_speech_duration_ms=int(round(cfg.min_speech_seconds * 1000)),
                max_speech_duration_s=cfg.max_speech_seconds,
                min_silence_duration_ms=int(round(cfg.min_silence_seconds * 1000)),
                speech_pad_ms=int(round(cfg.speech_pad_seconds * 1000)),
                window_size_samples=chunk,
            )
        duration = x.size / sr
        regions: list[tuple[float, float]] = []
        for st in stamps:
            start = max(0.0, st["start"] / sr)
            end = min(duration, st["end"] / sr)
            if regions and start <= regions[-1][1]:  # padding can make neighbours touch
                regions[-1] = (regions[-1][0], max(end, regions[-1][1]))
            elif end > start:
                regions.append((start, end))
        return regions

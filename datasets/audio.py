"""Decoding, resampling and shaping of audio: the one place that turns files and bytes into waveforms.

Everything downstream (models/pipelines, packing, augmentation, the HTTP service) receives
``float32 (T,)`` waveforms in [-1, 1] plus a sample rate; only this module knows about files.
Decoding goes through libsndfile (``soundfile``), which reads WAV, FLAC, OGG/Vorbis and MP3
(libsndfile >= 1.1). Resampling is ``models.waveform.resample`` (polyphase), the one resampler.

Every problem a user can cause with a bad file raises :class:`AudioError` (a ``ValueError``,
defined in ``models/waveform.py`` so that bad files and bad waveforms are one exception family)
whose message names the file, what is wrong and what to do about it.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from models.waveform import AudioError, resample

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "audio_info",
    "crop_or_pad",
    "decode_audio",
    "load_audio",
    "write_audio",
]

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


# ---------------------------------------------------------------------------------------------
# Decoding


def _wav_truncation(fh: BinaryIO, total_size: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE stream, ``(declared, present)`` data bytes when the data chunk is cut short.

    libsndfile silently shortens a truncated WAV to what is present, so a half-copied file would
    otherwise look like a valid short one. Streaming writers that leave the size as 0 or
    0xFFFFFFFF (unknown) are not flagged.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return None
    fmt = "<I" if head[:4] == b"RIFF" else ">I"
    pos = 12
    while pos + 8 <= total_size:
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8:
            return None
        cid, size = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
        if cid == b"data":
            present = total_size - (pos + 8)
            if 0 < size < 0xFFFFFFFF and present < size:
                return size, present
            return None
        pos += 8 + size + (size & 1)
    return None


def _describe(source: str | Path | bytes) -> str:
    return f"{len(source)} bytes of uploaded audio" if isinstance(source, bytes) else str(source)


def _decode(
    source: str | Path | bytes,
    target_sr: int | None,
    mono: bool,
    min_seconds: float,
    max_seconds: float | None,
) -> tuple[np.ndarray, int]:
    what = _describe(source)
    if isinstance(source, bytes):
        if len(source) == 0:
            raise AudioError(f"{what}: the upload is empty; send the audio file's bytes")
        fh: BinaryIO = io.BytesIO(source)
        total = len(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"{path}: no such audio file; check the path (and the manifest)")
        total = path.stat().st_size
        if total == 0:
            raise AudioError(f"{path}: the file is empty (0 bytes); re-copy or re-export it")
        fh = path.open("rb")
    try:
        cut = _wav_truncation(fh, total)
        if cut is not None:
            raise AudioError(
                f"{what}: truncated WAV: the header declares {cut[0]} data bytes but only "
                f"{cut[1]} are present; the copy or download was interrupted, fetch it again"
            )
        fh.seek(0)
        try:
            with sf.SoundFile(fh) as snd:
                sr, channels, declared = snd.samplerate, snd.channels, snd.frames
                if max_seconds is not None and declared > max_seconds * sr + 1:
                    raise AudioError(
                        f"{what}: {declared / sr:.2f} s of audio is longer than the "
                        f"{max_seconds:g} s allowed; split or trim it"
                    )
                data = snd.read(dtype="float32", always_2d=True)  # (T, C)
        except sf.SoundFileError as exc:
            raise AudioError(
                f"{what}: cannot be decoded as audio ({exc}); it is corrupt, truncated or not "
                f"a WAV/FLAC/OGG/MP3 file: re-export it in one of those formats"
            ) from exc
    finally:
        fh.close()
    got = data.shape[0]
    if got == 0:
        if declared > 0:
            raise AudioError(
                f"{what}: truncated: the header declares {declared} samples but none could be "
                f"decoded; fetch the file again"
            )
        raise AudioError(f"{what}: contains no audio samples (zero length); remove it")
    # Compressed formats that are cut short decode fewer samples than their header declares
    # (MP3 frame counts are estimates, hence the tolerance).
    if declared > 0 and got < declared - max(4608, 0.01 * declared):
        raise AudioError(
            f"{what}: truncated: the header declares {declared} samples but only {got} could "
            f"be decoded; fetch the file again"
        )
    if max_seconds is not None and got > max_seconds * sr + 1:
        raise AudioError(
            f"{what}: {got / sr:.2f} s of audio is longer than the {max_seconds:g} s allowed; "
            f"split or trim it"
        )
    if mono or channels == 1:
        wav = data.mean(axis=1) if channels > 1 else data[:, 0]
    else:
        wav = data.T  # (C, T)
    if target_sr is not None and target_sr != sr:
        # clipped: the anti-alias filter can overshoot full-scale input slightly
        wav = np.clip(resample(wav, sr, target_sr), -1.0, 1.0)
        sr = target_sr
    duration = wav.shape[-1] / sr
    if duration < min_seconds:
        raise AudioError(
            f"{what}: {duration:.3f} s of audio is shorter than the {min_seconds:g} s needed; "
            f"send a longer recording or lower min_seconds"
        )
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def load_audio(
    path: str | Path,
    target_sr: int | None = None,
    *,
    mono: bool = True,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file -> ``(wav, sample_rate)``.

    ``wav`` is float32 in [-1, 1]: ``(T,)`` when ``mono`` (channels averaged), else ``(C, T)``.
    With ``target_sr`` the audio is resampled and the returned rate is ``target_sr``.
    ``min_seconds`` / ``max_seconds`` bound the duration (after resampling); audio outside
    them raises :class:`AudioError` (the length is checked from the header before decoding,
    so an oversized upload is rejected cheaply). Crop with :func:`crop_or_pad` instead when
    long inputs are fine.
    """
    return _decode(Path(path), target_sr, mono, min_seconds, max_seconds)


def decode_audio(
    data: bytes,
    target_sr: int | None = None,
    *,
    mono: bool = True,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, int]:
    """:func:`load_audio` for in-memory bytes (an HTTP upload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"decode_audio expects bytes, got {type(data).__name__}")
    return _decode(bytes(data), target_sr, mono, min_seconds, max_seconds)


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """``(sample_rate, channels, duration_seconds)`` from the header, without decoding."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); re-copy or re-export it")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError as exc:
        raise AudioError(
            f"{path}: not readable as audio ({exc}); re-export it as WAV/FLAC/OGG/MP3"
        ) from exc
    return int(info.samplerate), int(info.channels), float(info.frames) / info.samplerate


# ---------------------------------------------------------------------------------------------
# Signal shaping


def crop_or_pad(wav: np.ndarray, num_samples: int, rng: np.random.Generator | None) -> np.ndarray:
    """Fix the length of ``wav: (T,)`` to ``num_samples``.

    Longer: a random crop drawn from ``rng`` (``None``: the centre crop, for evaluation).
    Shorter: repeat the signal (wrap padding), which keeps the speaker's voice throughout
    instead of adding silence the model would learn from.
    """
    wav = np.asarray(wav)
    n = wav.shape[-1]
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if n == 0:
        raise AudioError("cannot crop or pad zero-length audio; drop the empty utterance")
    if n == num_samples:
        return wav.copy()
    if n > num_samples:
        start = (n - num_samples) // 2 if rng is None else int(rng.integers(0, n - num_samples + 1))
        return wav[..., start : start + num_samples].copy()
    reps = -(-num_samples // n)
    return np.concatenate([wav] * reps, axis=-1)[..., :num_samples]


def write_audio(path: str | Path, wav: np.ndarray, sr: int) -> Path:
    """Write float audio (``(T,)`` or ``(C, T)``, [-1, 1]) as 16-bit PCM WAV; returns the path.

    Values outside [-1, 1] are clipped. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    if data.ndim == 2:
        data = data.T  # (T, C) for soundfile
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sf.write(str(tmp), data, int(sr), subtype="PCM_16", format="WAV")
    tmp.replace(path)
    return path

"""Decoding, resampling and shaping of audio: the one place that turns files and bytes into waveforms.

Everything downstream (models/pipelines, packing, augmentation, the HTTP service) receives
``float32 (T,)`` waveforms in [-1, 1] plus a sample rate; only this module knows about files.
Decoding goes through libsndfile (``soundfile``), which reads WAV, FLAC, OGG/Vorbis/Opus and
MP3 (libsndfile >= 1.1); what it cannot read (M4A/AAC, WebM/Opus, MP4, ...) goes through FFmpeg
by PyAV (``datasets/audio_av.py``). Decoding is bounded, header first, on both paths: the sample
rate and channel count (:class:`DecodeLimits`), the duration (``max_seconds``) and the decoded
size (:class:`AudioBudget`, per request in the service) are checked from the header before any
sample is decoded, and the read itself stops at the allowed number of frames, so a header that
understates its length cannot make it decode more. Resampling is ``models.waveform.resample`` (polyphase), the one resampler.

Every problem a user can cause with a bad file raises :class:`AudioError` (a ``ValueError``,
defined in ``models/waveform.py`` so that bad files and bad waveforms are one exception family)
whose message names the file, what is wrong and what to do about it.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from datasets.audio_av import decode_av
from models.waveform import AudioError, resample

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioBudget",
    "AudioError",
    "AudioLimitError",
    "DecodeLimits",
    "audio_info",
    "crop_or_pad",
    "decode_audio",
    "load_audio",
    "write_audio",
]

log = logging.getLogger(__name__)

# The one list of audio file extensions that tree scans and jobs look for: libsndfile's formats,
# then those decoded through FFmpeg (PyAV).
AUDIO_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".opus", ".mp3", ".sph",
    ".m4a", ".aac", ".mp4", ".webm", ".mka", ".caf", ".amr", ".wma",
)  # fmt: skip


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


# ---------------------------------------------------------------------------------------------
# Limits: checked from the header before decoding, and enforced on what is actually decoded


class AudioLimitError(AudioError):
    """Audio beyond a decoding limit (rate, channels, duration, decoded-audio budget).

    ``code`` names the limit (``sample_rate_too_high``, ``too_many_channels``,
    ``audio_too_long``, ``audio_budget_exceeded``) for services that map it to a status.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DecodeLimits:
    """Per-file bounds of :func:`load_audio` / :func:`decode_audio`, read from the header first.

    The defaults admit every real recording format (up to 192 kHz, 32 channels) and refuse
    the decode bombs: a tiny file whose header claims a huge or awkward rate or many
    channels. A file's decoded size is bounded separately, by the :class:`AudioBudget`.
    """

    max_sample_rate: int = 192_000  # Hz; above: refused before decoding
    max_channels: int = 32


# Audio sampled above this rate counts proportionally more against an AudioBudget, so that a
# budget in channel-seconds bounds memory (at most budget x BUDGET_RATE x 4 bytes of float32).
BUDGET_RATE = 48_000
# Default budget of one file decoded without a caller's budget (batch jobs, load_audio): four
# hours of mono audio (<= 2.6 GiB of float32 at 48 kHz, 0.9 GiB at 16 kHz).
DEFAULT_FILE_BUDGET_SECONDS = 4 * 3600.0


class AudioBudget:
    """Decoded audio allowed across the files of one request (or one file), thread-safe.

    Counted in channel-seconds: ``channels x seconds``, where audio sampled above
    ``BUDGET_RATE`` (48 kHz) counts ``rate / 48 kHz`` times as much, so the budget bounds the
    decoded samples, hence memory. Each file is charged from its header before it is decoded,
    and again for any frames it decodes beyond what its header declared.
    """

    def __init__(self, channel_seconds: float) -> None:
        if channel_seconds <= 0:
            raise ValueError(f"an audio budget must be positive, got {channel_seconds}")
        self.limit = float(channel_seconds)
        self.used = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def cost(frames: int, channels: int, sample_rate: int) -> float:
        return frames * channels / min(sample_rate, BUDGET_RATE)

    def frames_left(self, channels: int, sample_rate: int) -> int:
        with self._lock:
            left = max(0.0, self.limit - self.used)
        return int(left * min(sample_rate, BUDGET_RATE) / channels)

    def charge(self, what: str, frames: int, channels: int, sample_rate: int) -> None:
        """Take ``frames`` of ``channels`` at ``sample_rate`` from the budget, or raise."""
        cost = self.cost(frames, channels, sample_rate)
        with self._lock:
            if self.used + cost > self.limit:
                raise AudioLimitError(
                    f"{what}: {frames / sample_rate:.1f} s x {channels} channel(s) at "
                    f"{sample_rate} Hz is {cost:.0f} channel-seconds of decoded audio; with "
                    f"{self.used:.0f} already used, that passes the budget of {self.limit:g} "
                    f"channel-seconds (audio above {BUDGET_RATE // 1000} kHz counts "
                    f"proportionally more); send fewer, shorter or mono files",
                    "audio_budget_exceeded",
                )
            self.used += cost


@dataclass
class _Bounds:
    """The limits of one decode: checked on the header, then on the decoded frames."""

    what: str
    limits: DecodeLimits
    max_seconds: float | None
    budget: AudioBudget
    charged: int = 0  # frames charged to the budget so far

    def _too_long(self, frames: int, sr: int) -> AudioLimitError:
        return AudioLimitError(
            f"{self.what}: {frames / sr:.2f} s of audio is longer than the "
            f"{self.max_seconds:g} s allowed; split or trim it",
            "audio_too_long",
        )

    def header(self, sr: int, channels: int, declared: int) -> int:
        lim = self.limits
        if sr <= 0 or sr > lim.max_sample_rate:
            raise AudioLimitError(
                f"{self.what}: the header's sample rate {sr} Hz is outside 1..{lim.max_sample_rate}"
                f" Hz; resample the recording (e.g. to 16 or 48 kHz)",
                "sample_rate_too_high",
            )
        if channels <= 0 or channels > lim.max_channels:
            raise AudioLimitError(
                f"{self.what}: {channels} channels is outside 1..{lim.max_channels}; "
                f"down-mix the recording",
                "too_many_channels",
            )
        max_frames = None if self.max_seconds is None else int(self.max_seconds * sr) + 1
        if max_frames is not None and declared > max_frames:
            raise self._too_long(declared, sr)
        self.budget.charge(self.what, declared, channels, sr)
        self.charged = declared
        allowed = declared + self.budget.frames_left(channels, sr)
        return allowed if max_frames is None else min(allowed, max_frames)

    def overflow(self, sr: int, channels: int, frames: int) -> AudioLimitError:
        if self.max_seconds is not None and frames > int(self.max_seconds * sr) + 1:
            return self._too_long(frames, sr)
        try:
            self.budget.charge(self.what, frames - self.charged, channels, sr)
        except AudioLimitError as exc:
            return exc
        return AudioLimitError(
            f"{self.what}: decodes to more frames than allowed", "audio_too_long"
        )


def _read_soundfile(fh: BinaryIO, bounds: _Bounds) -> tuple[np.ndarray, int, int]:
    """libsndfile: header (``SoundFile`` reads only that) -> bounds -> at most the allowed
    frames -> ``(data (T, C) float32, sample_rate, declared frames)``."""
    with sf.SoundFile(fh) as snd:
        sr, channels, declared = snd.samplerate, snd.channels, snd.frames
        allowed = bounds.header(sr, channels, declared)
        # soundfile never reads past the header's frame count on a seekable file; asking for
        # one frame more than allowed detects a longer stream without trusting the header
        data = snd.read(frames=allowed + 1, dtype="float32", always_2d=True)  # (T, C)
    if data.shape[0] > allowed:
        raise bounds.overflow(sr, channels, data.shape[0])
    if data.shape[0] > declared:
        bounds.budget.charge(bounds.what, data.shape[0] - declared, channels, sr)
    return data, sr, declared


def _decode(
    source: str | Path | bytes,
    target_sr: int | None,
    mono: bool,
    min_seconds: float,
    max_seconds: float | None,
    limits: DecodeLimits | None = None,
    budget: AudioBudget | None = None,
    what: str | None = None,
) -> tuple[np.ndarray, int]:
    what = what or _describe(source)
    bounds = _Bounds(
        what,
        limits or DecodeLimits(),
        max_seconds,
        budget or AudioBudget(DEFAULT_FILE_BUDGET_SECONDS),
    )
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
            data, sr, declared = _read_soundfile(fh, bounds)
        except sf.SoundFileError:
            # not a libsndfile format (M4A/AAC, WebM/Opus, ...): FFmpeg through PyAV, bounded
            # the same way (datasets/audio_av.py)
            data, sr, declared = decode_av(fh, what, bounds)
    finally:
        fh.close()
    channels = data.shape[1]
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
    if mono or channels == 1:
        wav = data.mean(axis=1) if channels > 1 else data[:, 0]
    else:
        wav = data.T  # (C, T)
    del data
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
    limits: DecodeLimits | None = None,
    budget: AudioBudget | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file -> ``(wav, sample_rate)``.

    ``wav`` is float32 in [-1, 1]: ``(T,)`` when ``mono`` (channels averaged), else ``(C, T)``.
    With ``target_sr`` the audio is resampled and the returned rate is ``target_sr``.
    ``min_seconds`` / ``max_seconds`` bound the duration (after resampling); audio outside
    them raises :class:`AudioError` (the length is checked from the header before decoding,
    so an oversized upload is rejected cheaply). Crop with :func:`crop_or_pad` instead when
    long inputs are fine. ``limits`` (default :class:`DecodeLimits`) bound the header's rate
    and channels; ``budget`` the decoded channel-seconds (default: a fresh budget of
    ``DEFAULT_FILE_BUDGET_SECONDS`` for this file). Limits raise :class:`AudioLimitError`.
    """
    return _decode(Path(path), target_sr, mono, min_seconds, max_seconds, limits, budget)


def decode_audio(
    data: bytes,
    target_sr: int | None = None,
    *,
    mono: bool = True,
    min_seconds: float = 0.0,
    max_seconds: float | None = None,
    limits: DecodeLimits | None = None,
    budget: AudioBudget | None = None,
    name: str | None = None,
) -> tuple[np.ndarray, int]:
    """:func:`load_audio` for in-memory bytes (an HTTP upload); ``name`` replaces "N bytes of
    uploaded audio" in messages."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"decode_audio expects bytes, got {type(data).__name__}")
    return _decode(bytes(data), target_sr, mono, min_seconds, max_seconds, limits, budget, name)


def audio_info(path: str | Path) -> tuple[int, int, float]:
    """``(sample_rate, channels, duration_seconds)`` from the header, without decoding (FFmpeg
    formats: the container's duration estimate)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file; check the path")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); re-copy or re-export it")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError:
        with path.open("rb") as fh:
            empty, sr, frames = decode_av(fh, str(path), None, header_only=True)
        return sr, empty.shape[1], frames / sr
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

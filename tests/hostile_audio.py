"""Audio files the decoding tests build themselves: FFmpeg-encoded recordings (PyAV's encoders)
and hostile inputs (decode bombs). Shared by tests/datasets, tests/serve and tests/ray_jobs."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import textwrap

import av
import numpy as np
import soundfile as sf

# container format, codec, file suffix
FFMPEG_FORMATS = {
    "m4a": ("mp4", "aac", ".m4a"),
    "webm": ("webm", "libopus", ".webm"),
    "mp3": ("mp3", "libmp3lame", ".mp3"),
}


def encode_av(wav: np.ndarray, sr: int, kind: str) -> bytes:
    """``wav (T,)`` float in [-1, 1] -> the bytes of an M4A/AAC, WebM/Opus or MP3 file."""
    fmt, codec, _ = FFMPEG_FORMATS[kind]
    rate = 48000 if codec == "libopus" else sr  # Opus runs at 48 kHz
    if rate != sr:
        from models.waveform import resample

        wav = resample(wav, sr, rate)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)[None]  # (1, T) packed s16
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav_bomb(sample_rate: int = 1_000_003, size: int = 8 * 1024) -> bytes:
    """About ``size`` bytes of 16-bit WAV whose header claims ``sample_rate`` (default a prime
    above 1 MHz: resampling it to 16 kHz exactly would need a 20-million-tap filter)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((size - 44) // 2, np.int16), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@functools.cache  # ~7 s to encode on a loaded CI core: once per test session
def flac_bomb(seconds: int = 59, channels: int = 8, sample_rate: int = 655_000) -> bytes:
    """Silence as FLAC: ~335 KB for 59 s x 8 channels at 655 kHz, 1.2 GiB once decoded."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sample_rate, channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((sample_rate, channels), np.int16)
        for _ in range(seconds):
            f.write(block)
    return buf.getvalue()


def wav_many_channels(seconds: float, channels: int, sample_rate: int = 16000) -> bytes:
    """Quiet noise, ``channels`` channels: legal per file, heavy in numbers."""
    x = 0.01 * np.random.default_rng(0).standard_normal((int(seconds * sample_rate), channels))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decode_in_subprocess(paths: list[str], timeout: float = 120) -> list[dict]:
    """``datasets.audio.load_audio(path, 16000, max_seconds=60)`` of each path, in one fresh
    interpreter -> per path ``{"error": str|None, "seconds": wall, "rss_growth_mib": growth of
    the peak RSS over the decode}``. A subprocess, so the peak RSS measures these decodes only
    (the interpreter and its imports are counted before the first)."""
    code = textwrap.dedent(
        f"""
        import json, resource, time
        import datasets.audio as A
        out = []
        for path in {paths!r}:
            r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t = time.perf_counter(); err = None
            try:
                A.load_audio(path, 16000, max_seconds=60)
            except A.AudioError as exc:
                err = str(exc)
            out.append({{"error": err, "seconds": time.perf_counter() - t,
                "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - r0) / 1024}})
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

"""FFmpeg decoding through PyAV: M4A/AAC, WebM/Opus, Matroska, MP4, MP3, ASF/WMA, CAF, AMR.

``datasets.audio`` tries libsndfile (``soundfile``) first and comes here only for what
libsndfile cannot read. PyAV's wheels bundle FFmpeg's decoders, so nothing is installed beside
the Python package. The same bounds as the libsndfile path apply, header first:

1. the container format is chosen from the file's magic bytes (:func:`sniff_format`) from a
   short list of plain audio/video containers, and forced when opening. FFmpeg's automatic
   probing is never used, because demuxers such as HLS or concat open further URLs and files
   named inside the upload (a server-side file or network read an uploader could trigger);
2. the first audio stream's sample rate, channel count and duration (container metadata) go
   to ```bounds.header`` before the first packet is decoded; it raises for values beyond the
   limits and returns how many frames may be decoded;
3. decoding stops with an error as soon as more frames than that come out, whatever the
   header said; a frame whose rate or channel count differs from the header's is refused.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

import numpy as np

from models.waveform import AudioError

__all__ = ["decode_av", "sniff_format"]


class Bounds(Protocol):
    """What ``datasets.audio`` passes in: the limits, checked header first."""

    def header(self, sample_rate: int, channels: int, declared_frames: int) -> int:
        """Raise for a header beyond the limits, else return the most frames to decode."""

    def overflow(self, sample_rate: int, channels: int, frames: int) -> AudioError:
        """The error for a stream that decodes to ``frames``, more than ``header`` allowed."""


def sniff_format(head: bytes) -> str | None:
    """The FFmpeg demuxer for a file starting with ``head`` (>= 12 bytes), or ``None``."""
    if head[4:8] == b"ftyp":
        return "mov"  # mov,mp4,m4a,3gp: external data references stay off (enable_drefs=0)
    if head[:4] == b"\x1aE\xdf\xa3":
        return "matroska"  # matroska,webm
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[:4] == b"caff":
        return "caf"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == bytes.fromhex("3026b275"):
        return "asf"  # WMA
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync: layer bits 00 are AAC ADTS, the others MPEG layer I-III
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def _float_planar(frame, resampler) -> list[np.ndarray]:  # noqa: ANN001 (PyAV types)
    """One decoded frame -> ``(C, n)`` float32 arrays (the resampler keeps rate and layout)."""
    return [f.to_ndarray().astype(np.float32, copy=False) for f in resampler.resample(frame)]


def decode_av(
    fh: BinaryIO, what: str, bounds: Bounds | None, *, header_only: bool = False
) -> tuple[np.ndarray, int, int]:
    """Decode the first audio stream of ``fh`` -> ``(data (T, C) float32, sample_rate, 0)``.

    ``bounds.header(sample_rate, channels, declared_frames)`` sees the container's metadata
    before decoding and returns the most frames that may be decoded; decoding one more raises
    ``bounds.overflow(...)``. The last element (declared frames) is 0: container
    durations are estimates, so the truncation checks of libsndfile files do not apply.
    ``header_only``: read no packet; return ``(empty (0, C), sample_rate, estimated frames)``.
    """
    import av  # imported here: only files libsndfile cannot read pay for FFmpeg

    fh.seek(0)
    fmt = sniff_format(fh.read(16))
    if fmt is None:
        raise AudioError(
            f"{what}: cannot be decoded as audio: not a format voxray reads (WAV, FLAC, OGG, "
            f"MP3, M4A/AAC, WebM/Opus, Matroska, CAF, AMR, WMA); re-export it as WAV or FLAC"
        )
    fh.seek(0)
    try:
        with av.open(fh, mode="r", format=fmt) as container:
            if not container.streams.audio:
                raise AudioError(f"{what}: the {fmt} file has no audio stream; send audio")
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            sr, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
            if sr <= 0 or channels <= 0:
                raise AudioError(
                    f"{what}: cannot be decoded as audio: the {fmt} header gives no sample rate "
                    f"or channel count; re-export it as WAV or FLAC"
                )
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0  # unknown: the bound on decoded frames still holds
            if header_only or bounds is None:
                return np.zeros((0, channels), np.float32), sr, round(seconds * sr)
            allowed = bounds.header(sr, channels, round(seconds * sr))
            resampler = av.AudioResampler(format="fltp")
            chunks: list[np.ndarray] = []
            got = 0
            for frame in container.decode(stream):
                if frame.sample_rate != sr or frame.layout.nb_channels != channels:
                    raise AudioError(
                        f"{what}: the stream changes from {sr} Hz x {channels} channels to "
                        f"{frame.sample_rate} Hz x {frame.layout.nb_channels} channels; "
                        f"re-export it with one format"
                    )
                for arr in _float_planar(frame, resampler):
                    got += arr.shape[1]
                    if got > allowed:
                        raise bounds.overflow(sr, channels, got)
                    chunks.append(arr)
            for arr in _float_planar(None, resampler):  # flush
                chunks.append(arr[:, : max(0, allowed - got)])
                got += chunks[-1].shape[1]
    except av.error.FFmpegError as exc:
        raise AudioError(
            f"{what}: cannot be decoded as audio ({type(exc).__name__}); it is corrupt, "
            f"truncated or not a supported format: re-export it as WAV or FLAC"
        ) from exc
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return np.ascontiguousarray(data.T), sr, 0  # (T, C)

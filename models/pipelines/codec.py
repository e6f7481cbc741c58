"""Codec facade used by jobs and Serve: waveform -> compact codes -> waveform.

Bundles a registered ``codec``-family model (SoundStream / TinyStream, Zeghidour et al. 2021,
arXiv 2107.03312) with its sample rate and an identifier, the shape of torchaudio's pipeline
bundles (``torchaudio/pipelines/_source_separation_pipeline.py``). It takes waveforms plus a sample
rate, never paths: decoding audio files is ``datasets/audio.py``'s job, and writing the bytes of
``EncodedAudio.to_bytes()`` is the caller's.

The byte format (version 1, little-endian) stores the codes bit-packed at
``ceil(log2(codebook_size))`` bits each, in the spirit of EnCodec's ``.ecdc`` container
(facebookresearch/encodec ``encodec/compress.py``, read for understanding) but without entropy
coding::

    offset  size  field
    0       4     magic b"VXRC"
    4       1     version (1)
    5       1     bits per code
    6       2     model id length L (bytes of UTF-8)
    8       4     sample rate (Hz)
    12      8     number of samples of the original audio (at that rate)
    20      2     number of quantizers Q
    22      4     frames F
    26      4     codebook size
    30      4     hop length (samples per frame)
    34      L     model id (UTF-8)
    34 + L  ...   ceil(Q * F * bits / 8) bytes: codes in (Q, F) row-major order, MSB first

So the header is ``34 + L`` bytes and a file is ``34 + L + ceil(Q * F * bits / 8)`` bytes.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import model_from_checkpoint, read_checkpoint
from models.pipelines.speaker import checkpoint_model_id
from models.waveform import mono_float32, resample

log = logging.getLogger(__name__)

MAGIC = b"VXRC"
VERSION = 1
_HEADER = struct.Struct("<4sBBHIQHIII")  # magic .. hop length; the model id follows
HEADER_SIZE = _HEADER.size  # 34 bytes before the model id


class CodecFormatError(ValueError):
    """Bytes that are not a valid voxray codec stream (bad magic, version, truncated, corrupt)."""


def bits_per_code(codebook_size: int) -> int:
    """``ceil(log2(codebook_size))``: 10 for 1024 codes, 8 for 256."""
    if codebook_size < 2:
        raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Flatten ``codes`` (row-major) and pack each value into ``bits`` bits, MSB first."""
    flat = np.asarray(codes, dtype=np.uint64).reshape(-1)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    bitmat = ((flat[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)  # (N, bits)
    return np.packbits(bitmat.reshape(-1)).tobytes()


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of ``pack_codes``: ``count`` values of ``bits`` bits -> ``(count,)`` int64."""
    bitmat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits)
    weights = np.left_shift(np.int64(1), np.arange(bits - 1, -1, -1, dtype=np.int64))
    return bitmat.reshape(count, bits).astype(np.int64) @ weights


@dataclass
class EncodedAudio:
    """Codes of one mono clip plus what is needed to decode them.

    codes: ``(Q, F)`` integer codebook indices in ``[0, codebook_size)``.
    sample_rate: Hz of the audio the codes stand for (the model's rate).
    num_samples: length of that audio; decoding returns exactly this many samples.
    model_id: which codec produced the codes (decoding with another model is refused).
    codebook_size: entries per codebook; each code is stored in ``ceil(log2)`` bits.
    hop_length: samples per frame (sets the frame rate and so the bitrate).
    """

    codes: np.ndarray
    sample_rate: int
    num_samples: int
    model_id: str
    codebook_size: int
    hop_length: int

    @property
    def num_quantizers(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def bitrate(self) -> float:
        """Nominal bits per second: quantizers x log2(codebook_size) x frame rate."""
        return (
            self.num_quantizers * math.log2(self.codebook_size) * self.sample_rate / self.hop_length
        )

    def _validate(self) -> None:
        codes = np.asarray(self.codes)
        if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(
                f"codes must be a (Q, F) integer array, got {codes.dtype} {codes.shape}"
            )
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        if not 1 <= codes.shape[0] <= 0xFFFF or codes.shape[1] > 0xFFFFFFFF:
            raise ValueError(f"cannot store {codes.shape} codes (1 <= Q <= 65535)")
        if self.num_samples > codes.shape[1] * self.hop_length:
            raise ValueError(
                f"{self.num_samples} samples need more than {codes.shape[1]} frames of "
                f"{self.hop_length} samples"
            )

    def to_bytes(self) -> bytes:
        """Serialise to the compact format of the module docstring."""
        self._validate()
        model_id = self.model_id.encode("utf-8")
        if len(model_id) > 0xFFFF:
            raise ValueError("model_id is longer than 65535 bytes")
        bits = bits_per_code(self.codebook_size)
        header = _HEADER.pack(
            MAGIC,
            VERSION,
            bits,
            len(model_id),
            int(self.sample_rate),
            int(self.num_samples),
            self.num_quantizers,
            self.num_frames,
            int(self.codebook_size),
            int(self.hop_length),
        )
        return header + model_id + pack_codes(self.codes, bits)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncodedAudio:
        """Parse ``to_bytes`` output; raises ``CodecFormatError`` (a ``ValueError``) on bad
        magic, unknown version, truncated or trailing data, or out-of-range codes."""
        data = bytes(data)
        head = read_header(data)
        q, frames, bits, k = head.num_quantizers, head.num_frames, head.bits, head.codebook_size
        start = head.header_bytes
        codes = unpack_codes(data[start:], q * frames, bits).reshape(q, frames)
        if codes.size and codes.max() >= k:
            raise CodecFormatError(f"corrupt payload: code {int(codes.max())} >= codebook {k}")
        return cls(
            codes=codes,
            sample_rate=head.sample_rate,
            num_samples=head.num_samples,
            model_id=head.model_id,
            codebook_size=k,
            hop_length=head.hop_length,
        )


@dataclass(frozen=True)
class StreamHeader:
    """The header of a VXRC stream, checked against the stream's size (:func:`read_header`)."""

    sample_rate: int
    num_samples: int
    num_quantizers: int
    num_frames: int
    codebook_size: int
    hop_length: int
    bits: int
    model_id: str
    header_bytes: int  # 34 + model id length: where the packed codes start

    @property
    def decoded_samples(self) -> int:
        """Samples the decoder computes before cutting to ``num_samples``: frames x hop."""
        return self.num_frames * self.hop_length


def read_header(data: bytes) -> StreamHeader:
    """Parse and check a VXRC header without unpacking the codes (cheap on any input).

    Raises ``CodecFormatError`` unless the stream's byte size is exactly what the header
    implies, and the frame count fits the sample count (at most one partly used frame: a
    header cannot claim a few samples over hours of frames, which the decoder would compute).
    """
    if len(data) < 4 or data[:4] != MAGIC:
        raise CodecFormatError(f"not a voxray codec stream: magic is {data[:4]!r}, not {MAGIC!r}")
    if len(data) < HEADER_SIZE:
        raise CodecFormatError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    _, version, bits, id_len, sr, n_samples, q, frames, k, hop = _HEADER.unpack_from(data)
    if version != VERSION:
        raise CodecFormatError(
            f"unsupported codec stream version {version}; this reader knows {VERSION}"
        )
    if k < 2 or bits != bits_per_code(k) or q < 1 or hop < 1 or sr < 1:
        raise CodecFormatError(
            f"corrupt header: {q} quantizers, codebook {k}, {bits} bits/code, hop {hop}, rate {sr}"
        )
    start = HEADER_SIZE + id_len
    payload = math.ceil(q * frames * bits / 8)
    if len(data) != start + payload:
        kind = "truncated" if len(data) < start + payload else "trailing bytes in"
        raise CodecFormatError(
            f"{kind} codec stream: {len(data)} bytes, header says {start + payload}"
        )
    if n_samples > frames * hop:
        raise CodecFormatError(f"corrupt header: {n_samples} samples > {frames} x {hop}")
    if frames > 0 and (frames - 1) * hop >= n_samples:
        raise CodecFormatError(
            f"corrupt header: {frames} frames of {hop} samples for {n_samples} samples (at most "
            f"one partly used frame)"
        )
    try:
        model_id = bytes(data[HEADER_SIZE:start]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecFormatError(f"corrupt model id: {exc}") from exc
    return StreamHeader(sr, n_samples, q, frames, k, hop, bits, model_id, start)


class CodecPipeline:
    """``encode(wav, sample_rate) -> EncodedAudio`` and ``decode(EncodedAudio) -> wav``.

    ``model``: a ``codec``-family model (``SoundStream``/``TinyStream``), put in eval mode.
    ``model_id``: stored in every stream and checked on decode; defaults to the registry name.
    """

    def __init__(
        self, model: nn.Module, *, model_id: str | None = None, device: str | torch.device = "cpu"
    ) -> None:
        if not hasattr(model, "encode_stream") or not hasattr(model, "quantizer"):
            raise ValueError(
                f"{type(model).__name__} is not a codec model (soundstream/tinystream)"
            )
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.cfg = model.cfg
        self.model_id = model_id or getattr(model, "registry_name", type(model).__name__)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "cpu", **kwargs: Any
    ) -> CodecPipeline:
        """Load a voxray checkpoint. ``model_id`` is ``meta["model_id"]`` when the checkpoint has
        one, else ``"<model name>:<first 12 hex digits of the file's sha256>"``."""
        path = Path(path)
        ckpt = read_checkpoint(path)
        model = model_from_checkpoint(ckpt)
        meta_id = (ckpt.get("meta") or {}).get("model_id")
        kwargs.setdefault("model_id", meta_id or checkpoint_model_id(path, model))
        return cls(model, device=device, **kwargs)

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def hop_length(self) -> int:
        return int(self.cfg.hop_length)

    @property
    def num_quantizers(self) -> int:
        return int(self.cfg.num_quantizers)

    def bitrate(self, num_quantizers: int | None = None) -> float:
        return float(self.model.bitrate(num_quantizers))

    def _prepare(self, wav: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        """One mono clip -> ``(T,)`` float32 at ``self.sample_rate``."""
        x = mono_float32(wav, sample_rate)
        if int(sample_rate) != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        return x

    def _chunks(self, x: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        step = chunk_frames * self.hop_length
        for start in range(0, x.shape[-1], step):
            chunk = x[start : start + step]
            extra = -chunk.shape[-1] % self.hop_length  # only the last chunk is short
            if extra:
                chunk = torch.nn.functional.pad(chunk, (0, extra))
            yield chunk[None].to(self.device)  # (1, T_i)

    @torch.inference_mode()
    def encode(
        self,
        wav: np.ndarray | torch.Tensor,
        sample_rate: int,
        num_quantizers: int | None = None,
        *,
        chunk_seconds: float | None = None,
    ) -> EncodedAudio:
        """``wav: (T,)`` mono float (or int16 PCM) at ``sample_rate`` Hz -> ``EncodedAudio``.

        Audio at another rate is resampled to the model's; the result describes the resampled
        audio. ``num_quantizers`` (default: all) lowers the bitrate. ``chunk_seconds`` encodes
        chunk by chunk through the causal encoder's streaming state (bounded memory for long
        inputs); the codes equal the whole-signal codes.
        """
        x = self._prepare(wav, sample_rate)
        n = self.num_quantizers if num_quantizers is None else int(num_quantizers)
        if not 1 <= n <= self.num_quantizers:
            raise ValueError(f"num_quantizers must be in [1, {self.num_quantizers}], got {n}")
        if chunk_seconds is None:
            codes = self.model.encode(x[None].to(self.device), n)  # (1, n, F)
        else:
            frames = max(1, round(chunk_seconds * self.sample_rate / self.hop_length))
            codes = torch.cat(list(self.model.encode_stream(self._chunks(x, frames), n)), dim=-1)
        return EncodedAudio(
            codes=codes[0].cpu().numpy().astype(np.int64),
            sample_rate=self.sample_rate,
            num_samples=int(x.shape[-1]),
            model_id=self.model_id,
            codebook_size=int(self.cfg.codebook_size),
            hop_length=self.hop_length,
        )

    @torch.inference_mode()
    def decode(self, encoded: EncodedAudio) -> np.ndarray:
        """``EncodedAudio`` -> ``(num_samples,)`` float32 waveform at ``encoded.sample_rate``.

        Raises ``ValueError`` when the codes come from another model or do not fit this one.
        """
        if encoded.model_id != self.model_id:
            raise ValueError(
                f"codes were made by {encoded.model_id!r}, this pipeline is {self.model_id!r}; "
                "decode them with the same checkpoint"
            )
        if (
            encoded.sample_rate != self.sample_rate
            or encoded.hop_length != self.hop_length
            or encoded.codebook_size != self.cfg.codebook_size
        ):
            raise ValueError(
                "codes do not fit this model: "
                f"{encoded.sample_rate} Hz / hop {encoded.hop_length} / {encoded.codebook_size} "
                f"codes vs {self.sample_rate} / {self.hop_length} / {self.cfg.codebook_size}"
            )
        codes = torch.as_tensor(np.asarray(encoded.codes, dtype=np.int64))[None].to(self.device)
        audio = self.model.decode(codes)[0, 0, : encoded.num_samples]  # (T,)
        return audio.float().cpu().numpy()

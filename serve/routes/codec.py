"""Codec routes of the ingress: ``/codec/encode`` and ``/codec/decode``.

A route module of the ingress (``serve/app.py``; shared state in ``self.ctx``,
``serve/context.py``). Audio comes in as JSON (base64 or an allow-listed path) or multipart,
decoded by ``serve/audio_input.py`` at the codec's rate; each configured codec is its own
deployment (``serve/deployments/codec.py``) reached through ``ctx.product("codec:<name>")``,
which answers 404 when the app was started without codecs. Codes travel in the VXRC byte format
of ``models/pipelines/codec.py`` (SoundStream, arXiv 2107.03312), as base64 in JSON or raw
``application/octet-stream``; decoded audio as base64 WAV in JSON or raw ``audio/wav``
(``Accept`` header chooses).

Errors: unknown codec name 422 ``unknown_model``; corrupt codes 400 ``corrupt_codes``; codes of
another model 400 ``codec_mismatch``; bad audio 400 (``invalid_audio`` and friends); bodies over
``max_request_mb`` 413; streams longer than ``max_seconds`` 413 ``codes_too_long``. A stream to
decode is judged by its header before any code is unpacked: its byte size must be exactly what
the header implies, its rate and hop those of the codec, and its output length (frames x hop
samples, what the decoder computes) within ``max_seconds``.
"""

# No ``from __future__ import annotations`` here: Serve's ``@serve.ingress`` rebuilds the route
# methods, and FastAPI then cannot resolve string annotations such as ``request: Request``.

import base64
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ConfigDict, Field

from models.pipelines.codec import CodecFormatError, read_header
from serve import schemas as S
from serve.audio_input import limit_body, source_bytes
from serve.context import ServeContext
from serve.errors import ERRORS, ServiceError, checked, request_body
from serve.http import app
from serve.routes import binary_response, wav_bytes

OCTET = "application/octet-stream"


class CodecEncodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    audio: S.AudioSource
    model: str | None = None  # one of the app's `codecs` (default: the first)
    num_quantizers: int | None = Field(None, ge=1)  # fewer -> lower bitrate (default: all)


class CodecDecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: S.AudioSource  # the VXRC bytes: base64, an allow-listed path, or a file upload
    model: str | None = None  # default: the codec whose model id the stream carries


class CodecEncodeResponse(BaseModel):
    codes_base64: str
    bytes: int
    bitrate: float  # bits per second (nominal: quantizers x log2(codebook) x frame rate)
    frames: int
    num_quantizers: int
    duration_s: float
    model: str
    model_id: str


class CodecDecodeResponse(BaseModel):
    audio_base64: str  # 16-bit PCM WAV file bytes
    sample_rate: int
    duration_s: float
    model: str
    model_id: str


def _wants(request: Request, media_type: str) -> bool:
    return media_type in request.headers.get("accept", "")


def codec_name(ctx: ServeContext, name: str | None) -> str:
    """The configured codec ``name`` (default: the first); 404 without codecs, 422 unknown."""
    names = list(ctx.args.codecs)
    if not names:
        raise ctx.disabled("codec")
    if name is None:
        return names[0]
    if name not in names:
        raise ServiceError(422, "unknown_model", f"codec {name!r} is not one of {names}")
    return name


class CodecRoutes:
    """Codec encode/decode on the ``codec:<name>`` products; state is ``self.ctx``."""

    ctx: ServeContext

    @app.post(
        "/codec/encode",
        response_model=CodecEncodeResponse,
        responses={
            **ERRORS,
            **binary_response(
                OCTET,
                "The codes: JSON, or with `Accept: application/octet-stream` "
                "the raw VXRC stream (bitrate, frames and model id in `X-` headers)",
            ),
        },
        openapi_extra=request_body(CodecEncodeRequest, {"audio": False}),
    )
    async def codec_encode(self, request: Request) -> Any:
        """Audio -> VXRC codes (JSON with base64, or raw bytes with ``Accept: application/octet-stream``)."""
        req = await self.ctx.parse(request, CodecEncodeRequest, max_files=1)
        name = codec_name(self.ctx, req.model)
        handle, info = await self.ctx.product(f"codec:{name}")
        if req.num_quantizers is not None and req.num_quantizers > info["num_quantizers"]:
            raise ServiceError(
                422,
                "invalid_num_quantizers",
                f"codec {name!r} has {info['num_quantizers']} quantizers; ask for 1..that",
            )
        wav = await self.ctx.load(req.audio, "audio", self.ctx.product_limits(info))
        out = checked(await handle.encode.remote(wav, req.num_quantizers), "audio")
        if _wants(request, OCTET):
            return Response(
                content=out["data"],
                media_type=OCTET,
                headers={
                    "X-Bitrate": f"{out['bitrate']:.3f}",
                    "X-Frames": str(out["frames"]),
                    "X-Model-Id": out["model_id"],
                },
            )
        return CodecEncodeResponse(
            codes_base64=base64.b64encode(out["data"]).decode(),
            bytes=len(out["data"]),
            bitrate=out["bitrate"],
            frames=out["frames"],
            num_quantizers=out["num_quantizers"],
            duration_s=out["duration_s"],
            model=name,
            model_id=out["model_id"],
        )

    async def _decode_input(self, request: Request) -> tuple[bytes, str | None]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == OCTET:  # raw VXRC body; the codec may be named in the query string
            limited, _ = limit_body(request, self.ctx.args.max_request_bytes)
            return await limited.body(), request.query_params.get("model")
        req = await self.ctx.parse(request, CodecDecodeRequest, max_files=1)
        return source_bytes(
            req.codes, "codes", self.ctx.audio_limits(1, 0.0, self.ctx.args.max_seconds)
        ), req.model

    @app.post(
        "/codec/decode",
        response_model=CodecDecodeResponse,
        responses={
            **ERRORS,
            **binary_response(
                "audio/wav",
                "The decoded audio: JSON, or with `Accept: audio/wav` the 16-bit WAV file",
            ),
        },
        openapi_extra=request_body(CodecDecodeRequest, {"codes": False}),
    )
    async def codec_decode(self, request: Request) -> Any:
        """VXRC codes -> WAV (JSON with base64, or raw with ``Accept: audio/wav``)."""
        data, name = await self._decode_input(request)
        codec_name(self.ctx, None)  # 404 when no codec is configured
        try:  # the header only: its size is checked against the stream's bytes, cheaply
            head = read_header(data)
        except CodecFormatError as exc:
            raise ServiceError(400, "corrupt_codes", f"codes: {exc}") from exc
        if name is None:  # the codec whose model id the stream carries
            for cand in self.ctx.args.codecs:
                if (await self.ctx.product(f"codec:{cand}"))[1]["model_id"] == head.model_id:
                    name = cand
                    break
            else:
                raise ServiceError(
                    400,
                    "codec_mismatch",
                    f"the codes were made by {head.model_id!r}, which no configured codec is",
                )
        name = codec_name(self.ctx, name)
        handle, info = await self.ctx.product(f"codec:{name}")
        if head.model_id != info["model_id"]:
            raise ServiceError(
                400,
                "codec_mismatch",
                f"the codes were made by {head.model_id!r}, codec {name!r} is {info['model_id']!r}",
            )
        sr = int(info["sample_rate"])
        if head.sample_rate != sr or head.hop_length != int(info["hop_length"]):
            raise ServiceError(
                400,
                "codec_mismatch",
                f"the stream claims {head.sample_rate} Hz / hop {head.hop_length}; codec {name!r} "
                f"is {sr} Hz / hop {info['hop_length']}",
            )
        # The output length before decoding: what the decoder computes (frames x hop, at the
        # codec's own rate, not the header's), not only the sample count the header claims.
        seconds = head.decoded_samples / sr
        if seconds > self.ctx.args.max_seconds:
            raise ServiceError(
                413,
                "codes_too_long",
                f"the stream decodes to {seconds:.1f} s of audio, over "
                f"max_seconds={self.ctx.args.max_seconds:g}",
            )
        wav = checked(await handle.decode.remote(data), "codes", "corrupt_codes")
        audio = wav_bytes(wav, sr)
        if _wants(request, "audio/wav"):
            return Response(content=audio, media_type="audio/wav")
        return CodecDecodeResponse(
            audio_base64=base64.b64encode(audio).decode(),
            sample_rate=sr,
            duration_s=wav.size / sr,
            model=name,
            model_id=head.model_id,
        )


ROUTES = CodecRoutes  # found by serve.app.declared

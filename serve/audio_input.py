"""Audio input of the speaker service: request bodies -> validated requests -> waveforms.

Ray-free (tested without Ray). Three ways to send audio, under the same field names:

* ``multipart/form-data`` file uploads (parsed here with the standard library's rules for
  RFC 7578 bodies, so the service needs no ``python-multipart``);
* JSON with base64 strings (``{"audio": {"base64": "..."}}`` or a bare string);
* JSON with a server-side path (``{"audio": {"path": "..."}}``), read only under the configured
  allow-listed folders: ``..`` components are refused and symlinks are resolved before the
  containment check, so a link cannot point outside.

Bodies are read with a byte cap (413 before any decoding); decoding, down-mixing, resampling and
the duration limits are ``datasets.audio.decode_audio``'s job (the maximum duration is checked
from the header before decoding).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from datasets.audio import AudioError, decode_audio
from serve.schemas import AudioSource

M = TypeVar("M", bound=BaseModel)


class ServiceError(Exception):
    """A request the service refuses; becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AudioLimits:
    sample_rate: int  # decode to this rate (the model's)
    min_seconds: float
    max_seconds: float
    max_bytes: int  # per request body and per server-side file
    allowed_roots: tuple[Path, ...] = ()


class _Request(Protocol):
    headers: Any

    def stream(self) -> AsyncIterator[bytes]: ...


# ---------------------------------------------------------------------------------------------
# Bodies


def too_large(size: int | str, limit: int) -> ServiceError:
    return ServiceError(
        413,
        "request_too_large",
        f"the request body is {size} bytes, over the {limit}-byte limit "
        f"({limit / 2**20:g} MiB); send shorter or compressed (FLAC/OGG/MP3) audio",
    )


async def read_body(request: _Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 once it passes ``max_bytes`` (also when chunked)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(declared, max_bytes)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_large(f"more than {max_bytes}", max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"; filename="b.wav"'`` -> ``("form-data", {"name": "a", ...})``."""
    main, *rest = value.split(";")
    params = {}
    for item in rest:
        key, sep, val = item.strip().partition("=")
        if sep:
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1].replace('\\"', '"')
            params[key.strip().lower()] = val
    return main.strip().lower(), params


def parse_multipart(
    body: bytes, content_type: str
) -> tuple[dict[str, list[str]], dict[str, list[bytes]]]:
    """A ``multipart/form-data`` body -> ``(text fields, file fields)``, each name -> values.

    A part with a ``filename`` is a file (its bytes, untouched); others are UTF-8 text.
    """
    _, params = _header_params(content_type)
    boundary = params.get("boundary")
    if not boundary:
        raise ServiceError(400, "bad_multipart", "multipart body without a boundary parameter")
    delim = b"--" + boundary.encode("latin-1")
    data = b"\r\n" + body  # so the first delimiter looks like every other one
    pieces = data.split(b"\r\n" + delim)
    if len(pieces) < 2 or not pieces[-1].startswith(b"--"):
        raise ServiceError(
            400, "bad_multipart", "malformed multipart body (missing the closing boundary)"
        )
    fields: dict[str, list[str]] = {}
    files: dict[str, list[bytes]] = {}
    for piece in pieces[1:-1]:
        # Each part: optional transport padding, CRLF, headers, CRLF CRLF, content.
        _, crlf, part = piece.partition(b"\r\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not crlf or not sep:
            raise ServiceError(400, "bad_multipart", "malformed multipart part (no headers)")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, val = line.partition(":")
            headers[key.strip().lower()] = val.strip()
        kind, disp = _header_params(headers.get("content-disposition", ""))
        name = disp.get("name")
        if kind != "form-data" or not name:
            raise ServiceError(400, "bad_multipart", "multipart part without a form-data name")
        if "filename" in disp:
            files.setdefault(name, []).append(content)
        else:
            try:
                fields.setdefault(name, []).append(content.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ServiceError(
                    400,
                    "bad_multipart",
                    f"form field {name!r} is not UTF-8 text; send files with a filename",
                ) from exc
    return fields, files


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation))


def _is_dict(annotation: Any) -> bool:
    if typing.get_origin(annotation) is dict or annotation is dict:
        return True
    return any(_is_dict(a) for a in typing.get_args(annotation))


def _is_audio(annotation: Any) -> bool:
    return annotation is AudioSource or any(_is_audio(a) for a in typing.get_args(annotation))


def parse_request(body: bytes, content_type: str | None, model: type[M]) -> M:
    """A JSON or multipart body -> ``model`` (pydantic ``ValidationError`` -> 422 upstream).

    Multipart: files land in the model's ``AudioSource`` fields, text fields in the others
    (repeated names fill list fields; dict fields are JSON text).
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise ServiceError(
            400,
            "empty_body",
            "the request body is empty; send JSON or multipart/form-data (see /docs)",
        )
    if ctype == "multipart/form-data":
        fields, files = parse_multipart(body, content_type or "")
        values: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            ann = field.annotation
            if _is_audio(ann):
                got: list[Any] = [AudioSource.from_upload(b) for b in files.pop(name, [])]
                got += fields.pop(name, [])  # base64 text or {"path": ...} JSON is fine too
                got = [_maybe_json(g) for g in got]
            else:
                got = fields.pop(name, [])
                if name in files:
                    raise ServiceError(422, "invalid_request", f"field {name!r} is not a file")
                if _is_dict(ann):
                    got = [_json_field(name, g) for g in got]
            if not got:
                continue
            if _is_list(ann):
                values[name] = got
            elif len(got) > 1:
                raise ServiceError(
                    422, "invalid_request", f"field {name!r} was given {len(got)} times, once"
                )
            else:
                values[name] = got[0]
        unknown = sorted(set(fields) | set(files))
        if unknown:
            raise ServiceError(
                422,
                "invalid_request",
                f"unknown form field(s) {unknown}; expected {sorted(model.model_fields)}",
            )
        return model.model_validate(values)
    if ctype in ("application/json", "") or ctype.endswith("+json"):
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                raise ServiceError(
                    400, "invalid_json", f"the body is not valid JSON: {exc.errors()[0]['msg']}"
                ) from exc
            raise
    raise ServiceError(
        415,
        "unsupported_media_type",
        f"content type {ctype!r} is not accepted; send application/json or multipart/form-data",
    )


def _maybe_json(value: Any) -> Any:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _json_field(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ServiceError(
            422, "invalid_request", f"form field {name!r} must be a JSON object: {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------------
# Server-side paths


def resolve_allowed_path(path: str, roots: tuple[Path, ...]) -> Path:
    """``path`` resolved (symlinks followed) when it lies inside one of ``roots``, else 403.

    A relative path is taken relative to the first root. ``..`` components are refused outright
    (even when they would stay inside), so the allow-list is not a puzzle for the caller.
    """
    if not roots:
        raise ServiceError(
            403,
            "path_not_allowed",
            "this service reads no server-side paths; upload the audio or start it with "
            "allowed_roots",
        )
    if "\x00" in path or not path.strip():
        raise ServiceError(400, "invalid_path", f"invalid path {path!r}")
    p = Path(path)
    if ".." in p.parts:
        raise ServiceError(403, "path_not_allowed", f"{path}: '..' is not allowed in paths")
    if not p.is_absolute():
        p = roots[0] / p
    real = Path(os.path.realpath(p))
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real
    raise ServiceError(
        403,
        "path_not_allowed",
        f"{path} is outside the allowed folders {[str(r) for r in roots]}",
    )


# ---------------------------------------------------------------------------------------------
# Audio


def _audio_code(message: str) -> str:
    if "cannot be decoded" in message:
        return "invalid_audio"
    if "is empty" in message or "zero length" in message:
        return "empty_audio"
    if "longer than" in message:
        return "audio_too_long"
    if "shorter than" in message:
        return "audio_too_short"
    if "truncated" in message:
        return "truncated_audio"
    return "invalid_audio"


def source_bytes(src: AudioSource, field: str, limits: AudioLimits) -> bytes:
    """The encoded audio file of ``src`` (upload, base64 or allow-listed path)."""
    if src._raw is not None:
        return src._raw
    if src.base64 is not None:
        text = src.base64.strip()
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ServiceError(
                400, "invalid_base64", f"{field}: not valid base64 ({exc}); encode the file bytes"
            ) from exc
    path = resolve_allowed_path(src.path or "", limits.allowed_roots)
    if not path.is_file():
        raise ServiceError(404, "path_not_found", f"{field}: {src.path}: no such audio file")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ServiceError(
            413,
            "file_too_large",
            f"{field}: {src.path} is {size} bytes, over the {limits.max_bytes}-byte limit",
        )
    return path.read_bytes()


def load_source(src: AudioSource, field: str, limits: AudioLimits) -> np.ndarray:
    """``src`` -> mono float32 ``(T,)`` at ``limits.sample_rate``; bad audio -> 400 that says why."""
    data = source_bytes(src, field, limits)
    try:
        wav, _ = decode_audio(
            data,
            limits.sample_rate,
            min_seconds=limits.min_seconds,
            max_seconds=limits.max_seconds,
        )
    except AudioError as exc:
        msg = str(exc)
        if src.path is not None:
            msg = msg.replace(f"{len(data)} bytes of uploaded audio", src.path)
        raise ServiceError(400, _audio_code(msg), f"{field}: {msg}") from exc
    return wav

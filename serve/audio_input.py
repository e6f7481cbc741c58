"""Audio input of the speaker service: request bodies -> validated requests -> waveforms.

Ray-free (tested without Ray). Three ways to send audio, under the same field names:

* ``multipart/form-data`` file uploads (parsed by Starlette's form parser, ``python-multipart``,
  with limits on the number of parts);
* JSON with base64 strings (``{"audio": {"base64": "..."}}`` or a bare string);
* JSON with a server-side path (``{"audio": {"path": "..."}}``), read only under the configured
  allow-listed folders: ``..`` components are refused, and the file is opened first and checked
  after: the opened descriptor's real path (``/proc/self/fd``) must lie inside a root and be a
  regular file, and the bytes are read from that descriptor. Swapping a folder for a symlink
  between a check and the open therefore cannot make it read outside (:func:`read_allowed_file`).

Bodies are read through a byte counter (413 as soon as a body, chunked or not, passes the cap:
before it is held whole and before any decoding); decoding, down-mixing, resampling and
the limits are ``datasets.audio.decode_audio``'s job: sample rate, channels and duration are
checked from the header before decoding, and the decoded audio of all the files of one request
draws on one ``AudioBudget`` (``AudioLimits.budget``, 413 ``audio_budget_exceeded``). Messages
name the path the client sent, never the server's resolved path or its allowed roots.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import json
import os
import stat
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message, Receive

from datasets.audio import AudioBudget, AudioError, AudioLimitError, DecodeLimits, decode_audio
from serve.errors import ServiceError
from serve.schemas import AudioSource

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class AudioLimits:
    sample_rate: int  # decode to this rate (the model's)
    min_seconds: float
    max_seconds: float
    max_bytes: int  # per request body and per server-side file
    allowed_roots: tuple[Path, ...] = ()
    # decoded channel-seconds of the whole request, shared by its audio fields (None: per file)
    budget: AudioBudget | None = None
    decode: DecodeLimits = dataclasses.field(
        default_factory=DecodeLimits
    )  # header rate/channel bounds


# ---------------------------------------------------------------------------------------------
# Bodies


def too_large(size: int | str, limit: int) -> ServiceError:
    return ServiceError(
        413,
        "request_too_large",
        f"the request body is {size} bytes, over the {limit}-byte limit "
        f"({limit / 2**20:g} MiB); send shorter or compressed (FLAC/OGG/MP3) audio",
    )


class _CountedReceive:
    """An ASGI ``receive`` that counts body bytes and raises 413 past ``max_bytes``."""

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self.receive, self.max_bytes, self.total = receive, max_bytes, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.total += len(message.get("body", b""))
            if self.total > self.max_bytes:
                raise too_large(f"more than {self.max_bytes}", self.max_bytes)
        return message


def limit_body(request: Request, max_bytes: int) -> tuple[Request, _CountedReceive]:
    """``request`` whose body is refused with 413 once it passes ``max_bytes``, and its counter.

    A declared ``Content-Length`` above the limit is refused at once; otherwise the returned
    request counts the bytes as the ASGI server delivers them (chunked bodies too) and raises
    while reading, so an oversized body is never held whole. Read the body through the returned
    request only.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(declared, max_bytes)
    counter = _CountedReceive(request.receive, max_bytes)
    return Request(request.scope, counter), counter


async def read_form(
    request: Request, *, max_files: int, max_fields: int, max_part_size: int
) -> tuple[dict[str, list[str]], dict[str, list[bytes]]]:
    """A ``multipart/form-data`` request -> ``(text fields, file fields)``, each name -> values.

    Parsed by Starlette (``python-multipart``); a part with a filename is a file (its bytes,
    untouched), others are text. Malformed bodies -> 400 ``bad_multipart``; more than
    ``max_files`` files or ``max_fields`` text fields -> 413 ``too_many_parts``.
    """
    try:
        form = await request.form(
            max_files=max_files, max_fields=max_fields, max_part_size=max_part_size
        )
    except (MultiPartException, HTTPException) as exc:
        # Starlette raises HTTPException(400) instead when the scope carries an app.
        message = str(getattr(exc, "detail", None) or getattr(exc, "message", exc))
        if message.startswith("Too many"):
            raise ServiceError(413, "too_many_parts", message) from exc
        raise ServiceError(400, "bad_multipart", f"malformed multipart body: {message}") from exc
    fields: dict[str, list[str]] = {}
    files: dict[str, list[bytes]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(name, []).append(value)
            else:
                files.setdefault(name, []).append(await value.read())
    finally:
        await form.close()
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


def form_to_model(fields: dict[str, list[str]], files: dict[str, list[bytes]], model: type[M]) -> M:
    """Multipart ``(text fields, file fields)`` -> ``model`` (``ValidationError`` -> 422 upstream).

    Files land in the model's ``AudioSource`` fields, text in the others; repeated names fill
    list fields; dict fields are JSON text. An audio field may also be text: base64 or
    ``{"path": ...}`` JSON.
    """
    fields, files = dict(fields), dict(files)
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if _is_audio(ann):
            got: list[Any] = [AudioSource.from_upload(b) for b in files.pop(name, [])]
            got += [_maybe_json(g) for g in fields.pop(name, [])]
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


def json_to_model(body: bytes, model: type[M]) -> M:
    """A JSON body -> ``model``; not JSON -> 400 ``invalid_json`` (other errors: 422 upstream)."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ServiceError(
                400, "invalid_json", f"the body is not valid JSON: {exc.errors()[0]['msg']}"
            ) from exc
        raise


async def parse_request(
    request: Request,
    model: type[M],
    *,
    max_bytes: int,
    max_files: int,
    max_json_bytes: int | None = None,
    max_json_values: int = 1_000_000,
    max_seconds: float = 3600.0,
    samples_body: bool = False,
) -> M:
    """A JSON or multipart request -> ``model``, the body capped before it is held (413).

    Content types are strict: ``application/json``, or ``multipart/form-data`` for a model with
    audio fields; anything else, or none, is 415 (so a cross-site HTML form or a ``text/plain``
    "simple request" never reaches a route). A model without audio fields (``/config``,
    ``/galleries``, ...) is JSON-only and capped at ``max_json_bytes``; audio bodies at
    ``max_bytes``. ``max_files``: file parts a multipart body may hold (text fields: as many
    plus 16), and what bounds the audio items of a JSON body (:func:`check_json_counts`).
    Raw-sample audio items longer than ``max_seconds`` are refused before any array is built.
    ``samples_body``: a JSON model whose lists are audio samples (the legacy ``/speaker``), sized
    and counted like an audio body instead of capped as a small JSON one.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    audio = any(_is_audio(f.annotation) for f in model.model_fields.values())
    sized_as_audio = audio or samples_body
    cap = max_bytes if sized_as_audio or max_json_bytes is None else min(max_bytes, max_json_bytes)
    if ctype == "multipart/form-data" and audio:
        limited, counter = limit_body(request, cap)
        fields, files = await read_form(
            limited, max_files=max_files, max_fields=max_files + 16, max_part_size=cap
        )
        if not fields and not files:
            if counter.total:  # python-multipart drops an unterminated part silently
                raise ServiceError(
                    400,
                    "bad_multipart",
                    "malformed multipart body: no complete part (truncated, or missing the "
                    "closing boundary)",
                )
            raise _empty_body()
        return form_to_model(fields, files, model)
    if ctype == "application/json":
        limited, _ = limit_body(request, cap)
        body = await limited.body()
        if not body:
            raise _empty_body()
        if sized_as_audio:
            check_json_counts(body, max_items=max_files, max_values=max_json_values)
        if len(body) <= INLINE_JSON_BYTES:
            return _json_request(body, model, max_seconds)
        # the event loop keeps serving other requests (and /health) meanwhile
        return await asyncio.to_thread(_json_request, body, model, max_seconds)
    accepted = "application/json or multipart/form-data" if audio else "application/json"
    raise ServiceError(
        415,
        "unsupported_media_type",
        f"content type {ctype or '(none)'!r} is not accepted here; send {accepted} "
        "with a Content-Type header",
    )


INLINE_JSON_BYTES = 4096  # larger JSON bodies are parsed in a worker thread
RAW_SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)


def _json_request(body: bytes, model: type[M], max_seconds: float) -> M:
    req = json_to_model(body, model)
    for name, field in model.model_fields.items():
        value = getattr(req, name)
        if not _is_audio(field.annotation) or value is None:
            continue
        if isinstance(value, list):
            value = [samples_upload(v, f"{name}[{i}]", max_seconds) for i, v in enumerate(value)]
        else:
            value = samples_upload(value, name, max_seconds)
        setattr(req, name, value)
    return req


def samples_upload(src: AudioSource, field: str, max_seconds: float) -> AudioSource:
    """A raw-samples audio item (``{"samples": [...], "sample_rate": 16000}``) -> the same audio
    as an upload (a float WAV), so it meets the same decoding, resampling and duration limits
    as a file; other items are returned as they are. The rate must be one of
    ``RAW_SAMPLE_RATES`` (an odd rate would make resampling cost without bound) and the count
    at most ``max_seconds`` of it, checked before any array is built."""
    if src.samples is None:
        return src
    rate = int(src.sample_rate or 0)
    if rate not in RAW_SAMPLE_RATES:
        raise ServiceError(
            400,
            "invalid_sample_rate",
            f"{field}: sample_rate {rate} is not one of {RAW_SAMPLE_RATES}",
        )
    if len(src.samples) > max_seconds * rate:
        raise ServiceError(
            400,
            "audio_too_long",
            f"{field}: {len(src.samples)} samples are {len(src.samples) / rate:.1f} s at {rate} Hz, "
            f"longer than {max_seconds:g} s",
        )
    wav = np.asarray(src.samples, dtype=np.float32)
    if not np.isfinite(wav).all():
        raise ServiceError(400, "invalid_audio", f"{field}: samples must be finite numbers")
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype="FLOAT")
    return AudioSource.from_upload(buf.getvalue())


def check_json_counts(body: bytes, *, max_items: int, max_values: int) -> None:
    """Refuse (413) a JSON body of an audio route that would parse into too many objects,
    strings or values, from byte counts alone (C speed, nothing parsed).

    Each count is an upper bound: every object opens with ``{``, every string (and key) takes
    two ``"``, every value but the first of a container follows a ``,``; characters inside
    strings only inflate the bounds (base64 holds none of them). Audio items are objects or
    strings, so ``max_items`` (the route's audio-field bound, as for multipart) plus slack for
    the request's own fields and metadata bounds them; ``max_values`` bounds numbers, which
    raw-sample clips legitimately hold many of.
    """
    objects = body.count(b"{")
    strings = body.count(b'"') // 2
    values = body.count(b",") + objects + body.count(b"[") + 1
    for what, n, limit in (
        ("objects", objects, 2 * max_items + 256),
        ("strings", strings, 4 * max_items + 256),
        ("values", values, max_values),
    ):
        if n > limit:
            raise ServiceError(
                413,
                "too_many_items",
                f"the JSON body holds up to {n} {what}, over this route's limit of {limit}; "
                f"send at most {max_items} audio items per request",
            )


def _empty_body() -> ServiceError:
    return ServiceError(
        400,
        "empty_body",
        "the request body is empty; send JSON or multipart/form-data (see /docs)",
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
    try:
        real = Path(os.path.realpath(p))
    except OSError as exc:  # a link that changed or vanished while it was resolved
        raise ServiceError(404, "path_not_found", f"{path}: no such file or folder") from exc
    for root in roots:
        if real == root or real.is_relative_to(root):
            return real
    raise _outside(path)


def _outside(path: str) -> ServiceError:
    return ServiceError(
        403, "path_not_allowed", f"{path} is outside the folders this service may read"
    )


def read_allowed_file(
    path: str, roots: tuple[Path, ...], max_bytes: int, field: str, what: str = "audio file"
) -> bytes:
    """The bytes of the regular file ``path`` inside ``roots``, opened race-free.

    The name is checked first (:func:`resolve_allowed_path`: no ``..``, inside a root), then
    opened, and the *opened* file is checked: its real path (``/proc/self/fd/N``, what the
    descriptor refers to after every symlink) must lie inside a root, and ``fstat`` must show a
    regular file of at most ``max_bytes``; the bytes are read from that descriptor. A folder
    swapped for a symlink after the name check is caught by the second check. ``O_NONBLOCK``
    keeps a FIFO from blocking the open. Errors name ``path`` as sent, never the server's.
    """
    resolve_allowed_path(path, roots)
    p = Path(path) if Path(path).is_absolute() else roots[0] / path
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ServiceError(404, "path_not_found", f"{field}: {path}: no such {what}") from exc
    except OSError as exc:
        raise ServiceError(
            403, "path_not_allowed", f"{field}: {path} cannot be opened ({exc.strerror})"
        ) from exc
    try:
        try:
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError as exc:  # no /proc: the opened file cannot be checked, so refuse
            raise ServiceError(
                403, "path_not_allowed", "this platform cannot check opened paths; upload"
            ) from exc
        if not any(real == r or real.is_relative_to(r) for r in roots):
            raise _outside(path)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ServiceError(404, "path_not_found", f"{field}: {path}: no such {what}")
        if st.st_size > max_bytes:
            raise ServiceError(
                413,
                "file_too_large",
                f"{field}: {path} is {st.st_size} bytes, over the {max_bytes}-byte limit",
            )
        chunks, total = [], 0
        while total <= max_bytes:  # bounded: a file growing while read stops at the cap
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise ServiceError(
                413, "file_too_large", f"{field}: {path} is over the {max_bytes}-byte limit"
            )
        return b"".join(chunks)
    finally:
        os.close(fd)


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
    return read_allowed_file(src.path or "", limits.allowed_roots, limits.max_bytes, field)


def load_source(src: AudioSource, field: str, limits: AudioLimits) -> np.ndarray:
    """``src`` -> mono float32 ``(T,)`` at ``limits.sample_rate``; bad audio -> 400 that says why."""
    data = source_bytes(src, field, limits)
    try:
        wav, _ = decode_audio(
            data,
            limits.sample_rate,
            min_seconds=limits.min_seconds,
            max_seconds=limits.max_seconds,
            limits=limits.decode,
            budget=limits.budget,
            name=src.path,
        )
    except AudioLimitError as exc:  # the request's decoded-audio budget is a size limit: 413
        status = 413 if exc.code == "audio_budget_exceeded" else 400
        raise ServiceError(status, exc.code, f"{field}: {exc}") from exc
    except AudioError as exc:
        msg = str(exc)
        raise ServiceError(400, _audio_code(msg), f"{field}: {msg}") from exc
    return wav

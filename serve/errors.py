"""Errors and OpenAPI documentation of the speaker service (``serve/app.py``'s FastAPI app).

Every refusal is one JSON shape, ``{"error": {"code", "message"}}`` with a 4xx status (5xx only
for bugs): :class:`ServiceError` carries it from request handling, and
:func:`install_error_handlers` maps the library exceptions (store, audio, validation, routing) to
it. Bodies are parsed by ``serve/audio_input.py`` (JSON or multipart on the same route), so
FastAPI cannot infer them from signatures: :func:`request_body` documents each one explicitly and
:func:`install_openapi` adds the referenced models to the schema.

Ray-free (FastAPI/Starlette and pydantic only), so ``serve/audio_input.py`` can use it in tests
that run without Ray.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.waveform import AudioError
from serve.schemas import ErrorResponse
from serve.store import (
    MetadataTooLargeError,
    ModelMismatchError,
    StoreError,
    UnknownGroupError,
    UnknownSpeakerError,
)

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses; becomes ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 503


def checked(out: Any, field: str | None, code: str = "invalid_audio") -> Any:
    """A product deployment's answer: deployments return a bad input's message (a ``str``)
    rather than raise across the Ray boundary; that becomes 400 ``code`` (the message prefixed
    with ``field`` when given). Anything else is the result, returned as is."""
    if isinstance(out, str):
        raise ServiceError(400, code, out if field is None else f"{field}: {out}")
    return out


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


REQUEST_ID_HEADER = "x-request-id"  # the Serve proxy sets it on every request and response


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    """500 with a generic message and a request id; the exception (text, traceback, server
    paths) goes to the server log only, under that id."""
    rid = request.headers.get(REQUEST_ID_HEADER)
    headers = None
    if not rid:  # not behind the Serve proxy: make one, and send it back ourselves
        rid = uuid.uuid4().hex
        headers = {"X-Request-ID": rid}
    log.error(
        "internal error, request %s (%s %s)", rid, request.method, request.url.path, exc_info=exc
    )
    body = {
        "error": {
            "code": "internal_error",
            "message": f"internal error; the server log has the details under request id {rid}",
            "request_id": rid,
        }
    }
    return JSONResponse(body, status_code=500, headers=headers)


def validation_message(errors: list[Any]) -> str:
    """pydantic/FastAPI error dicts -> ``"field.sub: msg; other: msg"``."""
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _store_status(exc: StoreError) -> tuple[int, str]:
    if isinstance(exc, UnknownSpeakerError):
        return 404, "unknown_speaker"
    if isinstance(exc, UnknownGroupError):
        return 404, "unknown_group"
    if isinstance(exc, ModelMismatchError):
        return 409, "model_mismatch"
    if isinstance(exc, MetadataTooLargeError):
        return 413, "metadata_too_large"
    return 400, "invalid_request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the one error shape."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(ValidationError)
    async def _pydantic_error(_: Request, exc: ValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(exc.errors()))

    @app.exception_handler(RequestValidationError)
    async def _request_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(list(exc.errors())))

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return error_response(*_store_status(exc), str(exc))

    @app.exception_handler(AudioError)
    async def _audio_error(_: Request, exc: AudioError) -> JSONResponse:
        return error_response(400, "invalid_audio", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc)


# ---------------------------------------------------------------------------------------------
# OpenAPI

# The 4xx responses every body-taking route documents (``responses=ERRORS``).
ERRORS: dict[int | str, dict[str, Any]] = {
    str(code): {"model": ErrorResponse, "description": desc}
    for code, desc in [
        (400, "Bad audio or body"),
        (404, "Unknown speaker, group or path"),
        (413, "Request too large"),
        (401, "No or wrong API key (Authorization: Bearer <key>)"),
        (403, "The key lacks the route's scope"),
        (415, "Neither JSON nor multipart/form-data"),
        (422, "Invalid request"),
    ]
}

_DOC_MODELS: set[type[BaseModel]] = set()  # request models referenced by request_body()


def request_body(model: type[BaseModel], files: dict[str, bool] | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a JSON body ``model`` and, with ``files`` (field -> repeated), the
    equivalent multipart form (other fields as text)."""
    _DOC_MODELS.add(model)
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    }
    if files is not None:
        props: dict[str, Any] = {}
        for name in model.model_fields:
            one = {"type": "string", "format": "binary"} if name in files else {"type": "string"}
            props[name] = {"type": "array", "items": one} if files.get(name) else one
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        content["multipart/form-data"] = {
            "schema": {"type": "object", "properties": props, "required": required}
        }
    return {"requestBody": {"required": True, "content": content}}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the schemas of the models :func:`request_body` named."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            _, defs = models_json_schema(
                [(m, "validation") for m in sorted(_DOC_MODELS, key=lambda m: m.__name__)],
                ref_template="#/components/schemas/{model}",
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

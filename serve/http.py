"""The FastAPI app every voxray HTTP route hangs on, with its error handlers, OpenAPI docs and
the edge checks that run before any route: API key and scope (``serve/auth.py``) and CORS.

Route mixins (``serve/routes/<product>.py``) decorate their methods with ``@app.get`` /
``@app.post`` on this object; ``serve/app.py`` combines the mixins into one ingress class
(``@serve.ingress(app)``), so the whole product is one application and one port. The edge
checks reach the replica's ``ServeContext`` (its keys, its ``cors_origins``) through
:func:`current_context`. The pages for people, ``/docs`` (offline Swagger UI) and ``/ui`` (the web page), are ``serve/pages.py``'s.
"""

from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from serve.auth import OPEN, required_scope
from serve.errors import install_error_handlers, install_openapi
from serve.pages import install_pages


def current_context() -> Any:
    """The ``ServeContext`` of the ingress replica serving this request."""
    from ray import serve

    return serve.get_replica_context().servable_object.ctx


async def authorize(request: Request) -> None:
    """App-wide dependency: the key and scope check of ``serve/auth.py`` for the matched route.
    The calling key's name lands in ``request.state.key_name`` for the audit log."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", request.url.path)
    if required_scope(request.method, path) is OPEN:  # /health, the pages: no key, no context
        request.state.key_name = None
        return
    request.state.key_name = current_context().auth.check(
        request.method, path, request.headers.get("authorization"), request.headers.get("host")
    )


def _configured_origins() -> list[str]:
    """The replica's ``cors_origins``; none when the app runs outside a Serve replica (an
    in-process ASGI client), where no ``AppArgs`` exist to allow any."""
    from ray.serve.exceptions import RayServeException

    try:
        return list(current_context().args.cors_origins)
    except RayServeException:
        return []


class ConfiguredCORS:
    """CORS as ``AppArgs.cors_origins`` says: none (the default; browsers then refuse
    cross-origin reads), else Starlette's ``CORSMiddleware`` for exactly those origins. The
    middleware is built on the first request, when the replica's arguments are known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cors: ASGIApp | None = None
        self.origins: list[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.origins is None:
            self.origins = _configured_origins()
            if self.origins:
                self.cors = CORSMiddleware(
                    self.app,
                    allow_origins=self.origins,
                    allow_methods=["GET", "POST", "DELETE"],
                    allow_headers=["Authorization", "Content-Type"],
                )
        await (self.cors or self.app)(scope, receive, send)


app = FastAPI(
    title="voxray",
    description=(
        "Speaker verification, embedding extraction, enrollment and identification; "
        "diarization; target speaker extraction; neural codecs; sound classification. "
        "Every route but /health needs `Authorization: Bearer <key>` (README, Security)."
    ),
    version="1",
    dependencies=[Depends(authorize)],
    docs_url=None,  # serve/pages.py serves /docs with local assets (FastAPI's load from a CDN)
    redoc_url=None,
)
app.add_middleware(ConfiguredCORS)

install_error_handlers(app)
install_openapi(app)
install_pages(app)

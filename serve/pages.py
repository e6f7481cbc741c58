"""The app's pages for people: ``/ui`` (the web page of ``serve/ui/``) and ``/docs`` (Swagger UI),
and the OpenAPI tags that group the routes by product.

Both pages work without the internet: ``/ui`` is plain HTML, JavaScript and CSS in this
repository (no build step, no CDN), and ``/docs`` is FastAPI's self-hosting recipe ("Custom Docs
UI Static Assets") with Swagger UI's assets from the ``swagger-ui-bundle-v2`` package, served
under ``/docs/assets/``. Only the files named here are served (no path from the request reaches
the file system). The page talks to the public API only, with the same authentication as any
client.

Ray-free (FastAPI only): ``serve/http.py`` installs it on the app, and the tests exercise it
without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

UI_DIR = Path(__file__).resolve().parent / "ui"
# The page's files (serve/ui/) and the Swagger UI assets (the package's folder): name -> type.
UI_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "recorder.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
DOCS_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}

# One tag per product, in the order /docs shows them. A route's tag is its route module's name
# (``serve/routes/<product>.py``) unless the decorator sets one (``ADMIN_PATHS`` are "admin").
OPENAPI_TAGS: list[dict[str, str]] = [
    {"name": "speaker", "description": "Verification, embeddings, enrollment, identification."},
    {"name": "diarize", "description": "Who spoke when, optionally named from a group."},
    {"name": "tse", "description": "Target speaker extraction: one voice out of a mixture."},
    {"name": "codec", "description": "Neural codec: audio to VXRC codes and back."},
    {"name": "classify", "description": "Sound event classification."},
    {"name": "admin", "description": "Health, threshold and the active model."},
    {
        "name": "legacy",
        "description": "The routes of the older mode-based speaker servers (galleries called "
        "modes, raw 16 kHz samples as JSON), kept so their clients work unchanged.",
    },
]
ADMIN_PATHS = frozenset({"/health", "/config"})


def route_tag(route: APIRoute) -> str:
    """The product tag of a route without an explicit one."""
    if route.path in ADMIN_PATHS:
        return "admin"
    return route.endpoint.__module__.rpartition(".")[2]


def api_routes(router: Any) -> Iterator[APIRoute]:
    """Every ``APIRoute`` under ``router``, also inside included routers (FastAPI >= 0.137 keeps
    them nested, and Serve's ingress includes the class-based routes that way)."""
    for route in router.routes:
        if isinstance(route, APIRoute):
            yield route
        elif getattr(route, "original_router", None) is not None:
            yield from api_routes(route.original_router)


def tag_operations(app: FastAPI, schema: dict[str, Any]) -> None:
    """Give every operation of ``schema`` without tags its route's product tag."""
    tags = {
        (route.path, method.lower()): route_tag(route)
        for route in api_routes(app)
        for method in route.methods
    }
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            if isinstance(op, dict) and not op.get("tags") and (path, method) in tags:
                op["tags"] = [tags[(path, method)]]


def _file(folder: Path, name: str, files: dict[str, str]) -> FileResponse:
    if name not in files:
        raise HTTPException(404, f"no file {name!r} here")
    return FileResponse(folder / name, media_type=files[name])


def _swagger_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def docs_html(openapi_url: str = "/openapi.json") -> HTMLResponse:
    """Swagger UI over ``openapi_url`` with local assets only (no validator badge: it would
    fetch an external image)."""
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title="voxray API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None, "tryItOutEnabled": True},
    )


def install_pages(app: FastAPI) -> None:
    """Add ``/docs``, ``/docs/assets/*``, ``/ui`` and ``/ui/*`` to ``app`` (created with
    ``docs_url=None``), and the product tags to its OpenAPI schema."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return docs_html(app.openapi_url or "/openapi.json")

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        return _file(_swagger_dir(), name, DOCS_FILES)

    @app.get("/ui", include_in_schema=False)
    async def ui() -> RedirectResponse:
        # Relative URLs in the page (app.js, style.css) resolve against /ui/.
        return RedirectResponse("/ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    async def ui_index() -> FileResponse:
        return _file(UI_DIR, "index.html", UI_FILES)

    @app.get("/ui/{name}", include_in_schema=False)
    async def ui_file(name: str) -> FileResponse:
        return _file(UI_DIR, name, UI_FILES)

    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base()
            tag_operations(app, schema)
            schema["tags"] = OPENAPI_TAGS
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

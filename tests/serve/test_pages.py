"""The pages for people (``serve/pages.py``): /docs works offline (every asset it names is served
by the app itself), /ui serves its files and nothing else, and the OpenAPI spec groups the routes
by product and documents the binary answers. Without a cluster: the FastAPI app in-process."""

from __future__ import annotations

import importlib
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

PRODUCTS = {"speaker", "diarize", "tse", "codec", "classify", "admin", "legacy"}


class _Links(HTMLParser):
    """Every ``src``/``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def _links(html: str) -> list[str]:
    p = _Links()
    p.feed(html)
    return p.urls


@pytest.fixture(scope="module")
def client():
    from serve.http import app

    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def spec():
    pytest.importorskip("ray")
    importlib.import_module("serve.app")  # registers every route module on the app
    from serve.http import app

    return app.openapi()


def test_docs_reference_only_local_assets_that_the_app_serves(client):
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"https?://|//cdn|unpkg|jsdelivr", html), html
    urls = _links(html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(urls)
    assert "url: '/openapi.json'" in html and '"validatorUrl": null' in html
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url
    assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
    assert client.get("/docs/assets/index.html").status_code == 404  # only the named assets
    assert client.get("/redoc").status_code == 404  # it would load from a CDN


def test_ui_serves_its_files_and_nothing_else(client):
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "<title>voxray</title>" in page.text
    urls = _links(page.text)
    assert {"style.css", "app.js", "/docs"} <= set(urls)
    assert not [u for u in urls if u.startswith(("http:", "https:", "//"))]
    for name, kind in [
        ("app.js", "javascript"),
        ("recorder.js", "javascript"),
        ("style.css", "css"),
    ]:
        r = client.get(f"/ui/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    js = client.get("/ui/app.js").text
    assert '"Authorization"] = "Bearer "' in js and "sessionStorage" in js
    for bad in ("/ui/pages.py", "/ui/..%2Fpages.py", "/ui/%2e%2e/app.py", "/ui/nope.js"):
        r = client.get(bad)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad


def test_openapi_tags_every_operation_with_its_product(spec):
    assert [t["name"] for t in spec["tags"]] == [
        "speaker",
        "diarize",
        "tse",
        "codec",
        "classify",
        "admin",
        "legacy",
    ]
    tags = {
        (method, path): op.get("tags")
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert all(t is not None and len(t) == 1 and t[0] in PRODUCTS for t in tags.values()), tags
    expect = {
        ("post", "/verify"): "speaker",
        ("post", "/identify"): "speaker",
        ("get", "/groups"): "speaker",
        ("post", "/diarize"): "diarize",
        ("post", "/extract_target"): "tse",
        ("post", "/codec/encode"): "codec",
        ("post", "/codec/decode"): "codec",
        ("post", "/classify"): "classify",
        ("get", "/health"): "admin",
        ("post", "/config"): "admin",
        ("post", "/speaker"): "legacy",
        ("post", "/ModifyFeatsMode"): "legacy",
    }
    for key, tag in expect.items():
        assert tags[key] == [tag], key
    assert not {p for p in spec["paths"] if p.startswith(("/ui", "/docs"))}  # pages: no API


def test_openapi_documents_binary_answers(spec):
    def content(path):
        return spec["paths"][path]["post"]["responses"]["200"]["content"]

    binary = {"type": "string", "format": "binary"}
    assert content("/extract_target")["audio/wav"]["schema"] == binary
    assert content("/codec/decode")["audio/wav"]["schema"] == binary
    assert content("/codec/encode")["application/octet-stream"]["schema"] == binary
    for path in ("/extract_target", "/codec/encode", "/codec/decode"):
        assert "$ref" in content(path)["application/json"]["schema"]  # the JSON answer stays
    assert set(content("/verify")) == {"application/json"}

"""The ingress finds its products by discovery: every route module and optional deployment.

``serve.app`` imports Ray, and other test modules block ``ray`` while they are collected, so
the app is imported inside the fixture (after collection lifts the block).
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest


@pytest.fixture(scope="module")
def serve_app():
    pytest.importorskip("ray")
    return importlib.import_module("serve.app")


def test_every_route_module_is_a_base_of_the_ingress(serve_app):
    import serve.routes

    modules = {i.name for i in pkgutil.iter_modules(serve.routes.__path__)}
    assert {r.__module__.rsplit(".", 1)[1] for r in serve_app.ROUTES} == modules
    assert set(serve_app.ROUTES) <= set(serve_app.VoxrayService.func_or_class.__mro__)


def test_every_optional_deployment_is_a_product_with_its_own_key(serve_app):
    products = serve_app.PRODUCTS
    assert {p.key for p in products} == {"diarization", "tse", "codec", "classify"}
    assert len({p.arg for p in products}) == len(products)


def test_each_product_route_is_registered_on_the_app(serve_app):
    from serve.http import app

    paths = set(app.openapi()["paths"])
    for path in (
        "/verify",
        "/identify",
        "/diarize",
        "/extract_target",
        "/codec/encode",
        "/classify",
    ):
        assert path in paths


def test_declared_skips_modules_without_the_attribute(serve_app):
    import serve.deployments
    import serve.routes

    # the speaker deployment is always bound, so it declares no PRODUCT and is not listed
    names = {i.name for i in pkgutil.iter_modules(serve.deployments.__path__)}
    with_product = {
        n for n in names if hasattr(importlib.import_module(f"serve.deployments.{n}"), "PRODUCT")
    }
    assert with_product == names - {"speaker"}
    assert len(serve_app.declared(serve.deployments, "PRODUCT")) == len(with_product)
    assert serve_app.declared(serve.routes, "NO_SUCH_ATTRIBUTE") == ()

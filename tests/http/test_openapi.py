"""The OpenAPI document describes exactly the routes the app serves under /api/v1."""

from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from infrastructure.catalogue import demo_catalogue
from infrastructure.http.app import create_app
from infrastructure.http.grace import BadGrace, grace_of
from infrastructure.http.openapi import GRACE
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.support.stores import PEPPER


def test_openapi_document_lists_every_api_route_and_docs_page_renders(tmp_path: Path) -> None:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=f"sqlite:///{tmp_path}/lowrouter.db",
    )
    app = create_app(open_runtime(settings), demo_catalogue("http://127.0.0.1:9/demo/v1"))
    served = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        and route.path.startswith("/api/v1/")
        and route.path != "/api/v1/openapi.json"
        for method in (route.methods or set()) - {"HEAD"}
    }
    with TestClient(app) as client:
        document = client.get("/api/v1/openapi.json").json()
        described = {
            (path, method)
            for path, operations in document["paths"].items()
            for method in operations
        }
        assert described == served
        assert document["openapi"].startswith("3.")
        page = client.get("/docs")
        assert page.status_code == 200
        for path, _method in served:
            assert path in page.text


def test_the_documented_management_key_grace_is_the_accepted_one() -> None:
    documented = GRACE["grace_seconds"]
    assert (documented["minimum"], documented["maximum"]) == (0, 30 * 24 * 3600)
    assert grace_of(documented["maximum"]).days == 30
    with pytest.raises(BadGrace) as refused:
        grace_of(documented["maximum"] + 1)
    assert not refused.value.wrong_type

"""GET /api/v1/keys a page at a time (limit + cursor, as the usage lists), and a cap on the
live keys of an account (LOWROUTER_MAX_KEYS_PER_ACCOUNT): issue 15."""

from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from infrastructure.catalogue import DEMO_BASE_URL
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from tests.support.management_api import Api, assert_error, build_app

CAP = 4


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    runtime = open_runtime(replace(settings, max_keys_per_account=CAP))
    with TestClient(build_app(runtime, DEMO_BASE_URL)) as client:
        yield Api(client, runtime)


def test_keys_are_listed_a_page_at_a_time_without_gaps_or_repeats(api: Api) -> None:
    mk = api.open_account("acme")
    made = [api.create_key(mk, name=f"k{n}")[1]["id"] for n in range(CAP)]
    first = api.call("DELETE", f"/api/v1/keys/{made[0]}", mk)  # revoked keys are listed too
    assert first.status_code == 200
    made.append(api.create_key(mk, name="k4")[1]["id"])  # a revoked key frees a place
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.call("GET", "/api/v1/keys", mk, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["data"]) <= 2
        seen.extend(key["id"] for key in body["data"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made and pages == 3  # oldest first
    everything = api.call("GET", "/api/v1/keys", mk).json()
    assert [k["id"] for k in everything["data"]] == made and everything["next_cursor"] is None


BAD_PAGES = [
    ({"limit": "0"}, "invalid_value"),
    ({"limit": "²"}, "invalid_value"),
    ({"cursor": "nonsense"}, "invalid_cursor"),
    ({"page": "2"}, "unknown_parameter"),
]


def test_bad_page_parameters_are_refused(api: Api) -> None:
    mk = api.open_account("acme")
    for params, code in BAD_PAGES:  # one store for all: each case is one cheap request
        response = api.call("GET", "/api/v1/keys", mk, params=params)
        assert response.status_code in (400, 422), (params, response.text)
        assert response.json()["error"]["code"] == code, params


def test_an_account_has_at_most_the_cap_of_live_keys_and_rotation_is_not_refused(
    api: Api,
) -> None:
    mk = api.open_account("acme")
    keys = [api.create_key(mk, name=f"k{n}")[1] for n in range(CAP)]
    refused = api.call("POST", "/api/v1/keys", mk, json={"name": "one-too-many"})
    assert_error(refused, 409, "too_many_keys")
    assert str(CAP) in refused.json()["error"]["message"]
    rotated = api.call("POST", f"/api/v1/keys/{keys[0]['id']}/rotate", mk, json={})
    assert rotated.status_code == 201, rotated.text  # replacing a key is never refused
    listed = api.call("GET", "/api/v1/keys", mk).json()["data"]
    assert len(listed) == CAP + 1
    # The rotated key's grace (0 s) is over: it no longer takes a place.
    assert api.call("POST", "/api/v1/keys", mk, json={"name": "k5"}).status_code == 409
    api.call("DELETE", f"/api/v1/keys/{keys[1]['id']}", mk)
    assert api.call("POST", "/api/v1/keys", mk, json={"name": "k5"}).status_code == 201

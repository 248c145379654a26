"""Limits follow the rotation lineage (issue 15): a successor shares its predecessor's daily
spend, so a rotation chain cannot exceed the daily limit; through the management API and the
gateway, in process."""

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from domain.money import format_credits, parse_credits
from domain.pricing import hold_for, prompt_bound
from infrastructure.catalogue import DEMO_BASE_URL, demo_catalogue
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from tests.support.management_api import Api, build_app

CHAT = {"model": "lowrouter/echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    runtime = open_runtime(settings)
    with TestClient(build_app(runtime, DEMO_BASE_URL)) as client:
        yield Api(client, runtime)


def complete(api: Api, token: str) -> tuple[int, str]:
    response = api.call("POST", "/api/v1/chat/completions", token, json=CHAT)
    return response.status_code, response.json().get("error", {}).get("code", "")


def test_a_rotation_chain_cannot_exceed_the_daily_limit(api: Api) -> None:
    mk = api.open_account("acme")
    first, key = api.create_key(mk, name="rotating")
    response = api.call("POST", "/api/v1/chat/completions", first, json=CHAT)
    assert response.status_code == 200, response.text
    spent = parse_credits(response.headers["x-lowrouter-cost"])
    entry = demo_catalogue().models["lowrouter/echo"]
    hold = hold_for(entry.prices, prompt_bound(CHAT), entry.max_output_tokens)
    # One micro-credit short of another request's hold on top of what was spent today.
    limit = format_credits(spent + hold - 1)
    patched = api.call("PATCH", f"/api/v1/keys/{key['id']}", mk, json={"daily_limit": limit})
    assert patched.status_code == 200, patched.text
    assert complete(api, first) == (429, "daily_limit_exceeded")

    chain = [first]
    current = key["id"]
    for _ in range(2):  # rotate twice, each with a grace period: three live keys, one lineage
        rotated = api.call(
            "POST", f"/api/v1/keys/{current}/rotate", mk, json={"grace_seconds": 3600}
        )
        assert rotated.status_code == 201, rotated.text
        chain.append(rotated.json()["key"])
        current = rotated.json()["data"]["id"]
    for token in chain:
        assert complete(api, token) == (429, "daily_limit_exceeded")

    # The refusal is the lineage's day, not the limit itself: a fresh key with it is served.
    fresh, _ = api.create_key(mk, name="fresh", daily_limit=limit)
    assert complete(api, fresh) == (200, "")

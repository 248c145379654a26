"""GET /api/v1/models (only what the key may use) and GET /api/v1/key (API.md's shape)."""

import re

import httpx
from openai import OpenAI

from domain.money import format_credits, parse_credits
from domain.scope import Scope
from tests.e2e.conftest import USER_HELLO, LiveGateway, StartGateway, micro
from tests.fake_upstream import MODES


def model_ids(gateway: LiveGateway, token: str) -> list[str]:
    response = httpx.get(gateway.api + "/models", headers=gateway.auth(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    assert all(m["object"] == "model" for m in body["data"])
    return [m["id"] for m in body["data"]]


def test_models_lists_every_catalogue_model_for_an_unscoped_key(gateway: LiveGateway) -> None:
    ids = model_ids(gateway, gateway.token)
    assert ids[0] == "lowrouter/auto"
    assert sorted(ids[1:]) == sorted(f"fake/{mode}" for mode in MODES)


def test_models_lists_only_the_models_in_the_keys_scope(gateway: LiveGateway) -> None:
    _, token = gateway.create_key(Scope(models=("fake/ok", "fake/slow")))
    assert sorted(model_ids(gateway, token)) == ["fake/ok", "fake/slow", "lowrouter/auto"]
    # The official SDK reads the same list.
    listed = OpenAI(base_url=gateway.api, api_key=token, max_retries=0).models.list()
    assert sorted(m.id for m in listed) == ["fake/ok", "fake/slow", "lowrouter/auto"]


def test_models_lists_only_the_models_reachable_in_the_keys_region(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway("regions")
    _, eu_token = gateway.create_key(Scope(region="eu"))
    _, us_token = gateway.create_key(Scope(region="us"))
    _, nowhere_token = gateway.create_key(Scope(region="ap"))

    assert sorted(model_ids(gateway, eu_token)) == [
        "fake/overrun",
        "fake/stream-no-usage",
        "lowrouter/auto",
    ]
    assert sorted(model_ids(gateway, us_token)) == [
        "fake/ok",
        "fake/stream-no-usage",
        "lowrouter/auto",
    ]
    assert model_ids(gateway, nowhere_token) == []
    eu_models = httpx.get(gateway.api + "/models", headers=gateway.auth(eu_token)).json()["data"]
    both = next(m for m in eu_models if m["id"] == "fake/stream-no-usage")
    assert both["providers"] == ["fake-eu"]


def test_key_route_shows_identity_scope_and_spend_per_the_api_contract(
    gateway: LiveGateway,
) -> None:
    key_id, token = gateway.create_key(
        Scope(models=("fake/ok",), region="us", daily_limit=parse_credits("2")), name="my-app"
    )
    completion = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(token),
        json={"model": "fake/ok", "messages": USER_HELLO},
    )
    assert completion.status_code == 200, completion.text
    cost = micro(completion.json()["usage"]["cost"])

    response = httpx.get(gateway.api + "/key", headers=gateway.auth(token))
    assert response.status_code == 200
    assert "x-request-id" in response.headers
    key = response.json()
    assert token not in response.text and token[6:] not in response.text
    assert {
        "id",
        "name",
        "display",
        "status",
        "scope",
        "daily_limit",
        "spent_today",
        "remaining_today",
        "account_balance",
    } <= set(key)
    assert key["id"] == str(key_id)
    assert key["name"] == "my-app"
    assert key["status"] == "active"
    assert key["display"] == f"{token[:10]}…{token[-4:]}"
    assert re.fullmatch(r"lr-sk-[0-9A-Za-z]{4}…[0-9A-Za-z]{4}", key["display"])
    assert key["scope"] == {"models": ["fake/ok"], "region": "us", "daily_limit": "2.000000"}
    assert key["daily_limit"] == "2.000000"
    assert key["spent_today"] == format_credits(cost)
    assert key["remaining_today"] == format_credits(parse_credits("2") - cost)
    assert key["account_balance"] == format_credits(gateway.initial_balance - cost)


def test_key_route_for_an_unlimited_key_has_no_limit_and_no_remaining(
    gateway: LiveGateway,
) -> None:
    key = httpx.get(gateway.api + "/key", headers=gateway.auth()).json()
    assert key["daily_limit"] is None and key["remaining_today"] is None
    assert key["scope"] == {"models": None, "region": None, "daily_limit": None}
    assert key["spent_today"] == "0.000000"
    assert key["account_balance"] == format_credits(gateway.initial_balance)


def test_key_route_refuses_a_management_key(gateway: LiveGateway) -> None:
    response = httpx.get(gateway.api + "/key", headers=gateway.auth(gateway.management_token))
    assert response.status_code == 401
    assert "management key" in response.json()["error"]["message"]

"""`lowrouter/auto`: the cheapest allowed model first; a 5xx before any byte falls back to the next.

The "fallback" catalogue orders auto's candidates fake/error500 (cheapest), fake/ok, then
fake/stream-no-usage.
"""

import json

import httpx
import pytest

from domain.scope import Scope
from tests.e2e.conftest import USER_HELLO, StartGateway, micro


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_auto_falls_back_from_a_failing_cheapest_model_and_records_the_model_that_served(
    start_gateway: StartGateway, stream: bool
) -> None:
    gateway = start_gateway("fallback")
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "lowrouter/auto", "messages": USER_HELLO, "stream": stream},
        timeout=15,
    ) as response:
        assert response.status_code == 200, response.read()
        body = response.read()

    if stream:
        events = [
            json.loads(line[6:])
            for line in body.decode().splitlines()
            if line.startswith("data: {")
        ]
        assert body.decode().rstrip().endswith("data: [DONE]")
        assert {event["model"] for event in events} == {"fake/ok"}
        cost = events[-1]["usage"]["cost"]
    else:
        answer = json.loads(body)
        assert answer["model"] == "fake/ok"
        assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream"
        cost = answer["usage"]["cost"]

    # The upstream saw the cheapest model first, then the next one.
    assert [b["model"] for b in gateway.upstream.bodies] == ["fake-error500", "fake-ok"]
    rows = gateway.usage_rows()
    assert len(rows) == 1  # one request, one usage row: the attempt that failed is not a second
    row = rows[0]
    assert row.request_id == response.headers["x-request-id"]
    assert (row.model, row.status, row.status_code) == ("fake/ok", "ok", 200)
    assert micro(cost) == row.cost > 0
    assert gateway.page().balance == gateway.initial_balance - row.cost
    assert gateway.open_holds() == []


def test_auto_uses_only_the_models_in_the_keys_scope(start_gateway: StartGateway) -> None:
    gateway = start_gateway("fallback", scope=Scope(models=("fake/stream-no-usage",)))
    response = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "lowrouter/auto", "messages": USER_HELLO},
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fake/stream-no-usage"
    assert [b["model"] for b in gateway.upstream.bodies] == ["fake-stream-no-usage"]
    assert gateway.usage_rows()[0].model == "fake/stream-no-usage"


def test_auto_with_every_candidate_failing_is_a_502_at_no_cost(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway("fallback", scope=Scope(models=("fake/error500",)))
    response = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "lowrouter/auto", "messages": USER_HELLO},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.model, row.cost, row.status) == ("fake/error500", 0, "upstream_error")
    gateway.assert_nothing_charged()


def test_auto_for_a_region_pinned_key_routes_to_the_cheapest_model_in_that_region(
    start_gateway: StartGateway,
) -> None:
    # "regions": fake/ok (cheapest) is only in "us"; in "eu" fake/stream-no-usage is cheapest.
    gateway = start_gateway("regions", scope=Scope(region="eu"))
    response = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "lowrouter/auto", "messages": USER_HELLO},
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "fake/stream-no-usage"
    assert response.headers["x-lowrouter-provider"] == "fake-eu"
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.model, row.provider, row.region) == ("fake/stream-no-usage", "fake-eu", "eu")

"""Money through the real server: daily limits, credit balances, over-long answers and 200
concurrent completions on one key, each charged exactly once."""

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.money import format_credits, parse_credits
from domain.scope import Scope
from tests.e2e.apis import CALLS, ApiCall
from tests.e2e.conftest import USER_HELLO, LiveGateway, StartGateway, micro

BODY = {"model": "fake/ok", "messages": USER_HELLO, "max_tokens": 5}


def post(gateway: LiveGateway, token: str, body: dict[str, Any] = BODY) -> httpx.Response:
    return httpx.post(
        gateway.api + "/chat/completions", headers=gateway.auth(token), json=body, timeout=15
    )


def next_midnight_utc() -> str:
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    return f"{tomorrow.isoformat()}T00:00:00Z"


# --- daily limit ---------------------------------------------------------------------------------


def test_daily_limit_refuses_with_429_once_the_worst_case_no_longer_fits(
    gateway: LiveGateway,
) -> None:
    # Learn the worst case (the hold) of this request from a first one on another key.
    probe = post(gateway, gateway.token)
    assert probe.status_code == 200, probe.text
    row = gateway.usage_row(probe.headers["x-request-id"])
    hold, cost = row.held, row.cost
    n = 3
    limit = n * hold
    key_id, token = gateway.create_key(Scope(daily_limit=limit), name="limited")

    # Served while the spend so far plus one more hold fits: at most this many, then refused.
    most = (limit - hold) // cost + 1
    responses = [post(gateway, token) for _ in range(most + 2)]

    statuses = [r.status_code for r in responses]
    served = statuses.count(200)
    assert served >= n, statuses  # the limit covers at least n worst cases
    assert set(statuses) == {200, 429}, statuses
    first_refusal = statuses.index(429)
    assert statuses[first_refusal:] == [429] * (len(statuses) - first_refusal)

    rows = [r for r in gateway.usage_rows() if r.key_id == str(key_id)]
    assert len(rows) == served
    settled = sum(r.cost for r in rows)
    assert settled <= limit
    assert gateway.spent_today(key_id) == settled
    assert gateway.open_holds() == []

    refusal = responses[first_refusal]
    error = refusal.json()["error"]
    assert (error["code"], error["type"]) == ("daily_limit_exceeded", "rate_limit_error")
    message = error["message"]
    assert f"spent {format_credits(settled)}" in message, message
    assert format_credits(limit) in message
    assert next_midnight_utc() in message
    # No retry can cure it: no retry-after (which clients would sleep on), and the SDKs' stop sign.
    assert "retry-after" not in refusal.headers
    assert refusal.headers["x-should-retry"] == "false"
    # /key agrees: what is left today does not cover another worst case.
    key = httpx.get(gateway.api + "/key", headers=gateway.auth(token)).json()
    assert micro(key["spent_today"]) == settled
    assert micro(key["remaining_today"]) == limit - settled < hold
    # Refusals moved no money.
    probe_cost = gateway.usage_row(probe.headers["x-request-id"]).cost
    assert gateway.page().balance == gateway.initial_balance - probe_cost - settled


@pytest.mark.parametrize("call", CALLS, ids=[c.id for c in CALLS])
@pytest.mark.parametrize("limit", ["daily-limit", "balance"])
def test_limits_hold_under_concurrent_requests_on_every_api(
    start_gateway: StartGateway, call: ApiCall, limit: str
) -> None:
    """40 concurrent requests against room for 4 worst cases: a key's daily limit, or the
    account's credits. Refusals are 429 or 402; what was served stays within the limit."""
    gateway = start_gateway("apis")
    probe = call.post(gateway)
    assert probe.status_code == 200, probe.text
    hold = gateway.usage_row(probe.headers["x-request-id"]).held
    if limit == "daily-limit":
        key_id, token = gateway.create_key(Scope(daily_limit=4 * hold), name="limited-burst")
        target, refusal = gateway, 429
    else:
        target = start_gateway("apis", credits=format_credits(4 * hold))
        key_id, token, refusal = target.key_id, target.token, 402

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        target.api + call.path, headers=call.headers(token), json=call.body()
                    )
                    for _ in range(40)
                )
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert set(statuses) <= {200, refusal}, statuses
    served = statuses.count(200)
    assert 4 <= served < 40
    rows = [r for r in target.usage_rows() if r.key_id == str(key_id)]
    assert len(rows) == served and {r.api for r in rows} == {call.api}
    charged = sum(r.cost for r in rows)
    assert charged == target.spent_today(key_id) <= 4 * hold
    page = target.page()
    assert page.held == 0 and page.balance >= 0
    if limit == "balance":
        assert page.balance == target.initial_balance - charged


# --- credits -------------------------------------------------------------------------------------


def test_too_few_credits_is_refused_with_402_and_lower_max_tokens_helps(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway(credits="0.000100")
    # Without max_tokens the hold covers the model's output cap (256 tokens): more than 100 µcr.
    response = post(gateway, gateway.token, {"model": "fake/ok", "messages": USER_HELLO})

    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("insufficient_credits", "insufficient_quota")
    assert "0.000100" in error["message"]  # the balance
    assert "max_tokens" in error["message"]
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == [] and gateway.upstream.requests == []

    # Following the advice: a small max_tokens fits the balance.
    served = post(gateway, gateway.token, {**BODY, "max_tokens": 5})
    assert served.status_code == 200, served.text
    row = gateway.usage_row(served.headers["x-request-id"])
    assert gateway.page().balance == parse_credits("0.000100") - row.cost


def test_account_without_credits_is_refused_with_402(start_gateway: StartGateway) -> None:
    gateway = start_gateway(credits="0")
    response = post(gateway, gateway.token)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == []


# --- an upstream that produces more than max_tokens ----------------------------------------------


def test_upstream_overrunning_max_tokens_is_charged_at_most_the_hold_and_flagged(
    gateway: LiveGateway,
) -> None:
    response = post(gateway, gateway.token, {**BODY, "model": "fake/overrun", "max_tokens": 2})
    assert response.status_code == 200, response.text
    row = gateway.usage_row(response.headers["x-request-id"])
    assert row.cost == row.held > 0
    assert "over_hold" in json.loads(row.flags)
    assert micro(response.json()["usage"]["cost"]) == row.cost


# --- 200 concurrent completions on one key -------------------------------------------------------


CONCURRENT = 200


async def _concurrent_completions(gateway: LiveGateway) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
    async with httpx.AsyncClient(
        base_url=gateway.api, headers=gateway.auth(), limits=limits, timeout=60
    ) as client:

        async def one(index: int) -> httpx.Response:
            body = {**BODY, "stream": index % 2 == 1}  # half of them streamed
            response = await client.post("/chat/completions", json=body)
            await response.aread()
            return response

        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))


def _reported_cost(response: httpx.Response) -> int:
    if response.headers["content-type"].startswith("application/json"):
        return micro(response.json()["usage"]["cost"])
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    assert response.text.rstrip().endswith("data: [DONE]")
    return micro(events[-1]["usage"]["cost"])


@pytest.mark.timeout(60)
def test_200_concurrent_completions_on_one_key_are_each_recorded_and_charged_once(
    gateway: LiveGateway,
) -> None:
    responses = asyncio.run(_concurrent_completions(gateway))

    failed = [(r.status_code, r.text[:300]) for r in responses if r.status_code != 200]
    assert failed == []
    request_ids = {r.headers["x-request-id"] for r in responses}
    assert len(request_ids) == CONCURRENT
    rows = gateway.usage_rows()
    assert len(rows) == CONCURRENT
    assert {row.request_id for row in rows} == request_ids
    assert all(row.status == "ok" and row.cost > 0 for row in rows)
    recorded = sum(row.cost for row in rows)
    assert sum(_reported_cost(r) for r in responses) == recorded
    page = gateway.page()
    assert page.day_spent[str(gateway.key_id)] == recorded
    assert gateway.initial_balance - page.balance == recorded
    assert page.held == 0 and gateway.open_holds() == []
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", rid) for rid in request_ids)

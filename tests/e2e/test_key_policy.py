"""The key policy at the gateway, end to end (real uvicorn, the fake upstream, real clients):
the IP allowlist and X-Forwarded-For, the x-ratelimit-* headers, which refusals invite a retry,
the OpenAI SDK stopping after one request, and every policy change in the key's history."""

from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from domain.policy import KeyPolicy
from domain.scope import Scope
from infrastructure.http.auth import client_address, trusted_networks
from tests.e2e.conftest import USER_HELLO, LiveGateway, StartGateway

BODY = {"model": "fake/ok", "messages": USER_HELLO, "max_tokens": 20}


def chat(gateway: LiveGateway, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        gateway.api + "/chat/completions",
        json=BODY,
        headers={**gateway.auth(token), **headers},
        timeout=30,
    )


def test_the_allowlist_admits_its_networks_and_ignores_forwarded_for_from_an_untrusted_peer(
    gateway: LiveGateway,
) -> None:
    _, loopback = gateway.create_key(policy=KeyPolicy(allowed_ips=("127.0.0.0/8",)))
    _, elsewhere = gateway.create_key(policy=KeyPolicy(allowed_ips=("203.0.113.0/24",)))
    assert chat(gateway, loopback).status_code == 200
    refused = chat(gateway, elsewhere)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    assert refused.headers["x-should-retry"] == "false"
    # The peer (127.0.0.1) is no trusted proxy here: a forged header changes nothing.
    spoofed = chat(gateway, elsewhere, **{"X-Forwarded-For": "203.0.113.5"})
    assert spoofed.status_code == 403
    assert gateway.open_holds() == []


@pytest.mark.parametrize(
    ("forwarded", "allowed"),
    [
        ("203.0.113.5", True),
        ("2001:db8::7", True),  # IPv6
        ("198.51.100.9, 203.0.113.5", True),  # right-most untrusted: 203.0.113.5
        ("203.0.113.5, 198.51.100.9", False),  # the client wrote the left part
        ("203.0.113.5, 127.0.0.1", True),  # a second trusted proxy appended itself
        ("", False),  # no header: the proxy's own address, not allowed
    ],
)
def test_forwarded_for_is_honoured_from_a_trusted_proxy(
    start_gateway: StartGateway, forwarded: str, allowed: bool
) -> None:
    gateway = start_gateway("proxied")
    _, token = gateway.create_key(policy=KeyPolicy(allowed_ips=("203.0.113.0/24", "2001:db8::/32")))
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    response = chat(gateway, token, **headers)
    assert response.status_code == (200 if allowed else 403), response.text
    if allowed:  # the usage record names the client, not the proxy
        row = gateway.usage_row(response.headers["x-request-id"])
        hops = [hop.strip() for hop in forwarded.split(",")]
        assert row.client_ip == next(h for h in reversed(hops) if h != "127.0.0.1")


def test_client_address_rules() -> None:
    trusted = trusted_networks(["10.0.0.0/8", "::1"])
    assert client_address("192.0.2.1", ["203.0.113.5"], trusted) == "192.0.2.1"
    assert client_address("10.1.1.1", ["203.0.113.5, 10.2.2.2"], trusted) == "203.0.113.5"
    assert client_address("::1", ["2001:db8::1"], trusted) == "2001:db8::1"
    assert client_address("10.1.1.1", ["a, b", "c"], trusted) == "c"  # headers joined in order
    assert client_address("10.1.1.1", [], trusted) == "10.1.1.1"
    assert client_address("192.0.2.1", ["203.0.113.5"], ()) == "192.0.2.1"


def test_ratelimit_headers_count_down_and_a_curable_refusal_says_when(
    gateway: LiveGateway,
) -> None:
    _, token = gateway.create_key(policy=KeyPolicy(requests_per_minute=2, tokens_per_minute=10**5))
    first, second, third = (chat(gateway, token) for _ in range(3))
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(second.headers["x-ratelimit-remaining-tokens"]) < 10**5
    assert second.headers["x-ratelimit-reset-requests"].endswith("s")
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert "x-should-retry" not in third.headers
    # A key without limits gets no such headers.
    assert "x-ratelimit-limit-requests" not in chat(gateway, gateway.token).headers


@pytest.mark.parametrize("limit", ["daily", "monthly"])
def test_the_openai_sdk_makes_exactly_one_request_for_a_spending_limit(
    gateway: LiveGateway, limit: str
) -> None:
    if limit == "daily":
        _, token = gateway.create_key(Scope(daily_limit=0))
    else:
        _, token = gateway.create_key(policy=KeyPolicy(monthly_limit=0))
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    client = openai.OpenAI(api_key=token, base_url=gateway.api, max_retries=3, http_client=http)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="fake/ok", messages=USER_HELLO, max_tokens=5)
    assert refused.value.code == f"{limit}_limit_exceeded"
    assert len(sent) == 1
    response = refused.value.response
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers


def test_every_policy_change_is_an_event_in_the_keys_history(gateway: LiveGateway) -> None:
    mk = {"Authorization": f"Bearer {gateway.management_token}"}
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    created = httpx.post(
        gateway.api + "/keys",
        headers=mk,
        json={"name": "p", "expires_at": expires.isoformat(), "requests_per_minute": 60},
    )
    assert created.status_code == 201, created.text
    key = created.json()["data"]
    assert key["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert (key["requests_per_minute"], key["allowed_ips"], key["changeable"]) == (60, None, True)
    path = f"{gateway.api}/keys/{key['id']}"
    for bad in ({"allowed_ips": ["nope"]}, {"max_concurrent": 0}, {"expires_at": "2001-01-01Z"}):
        refused = httpx.patch(path, headers=mk, json=bad)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["param"] == next(iter(bad))
    patched = httpx.patch(
        path,
        headers=mk,
        json={"allowed_ips": ["10.0.0.0/8"], "monthly_limit": "5", "requests_per_minute": None},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["monthly_limit"] == "5.000000"
    events = httpx.get(path + "/events", headers=mk).json()["data"]
    changes = [e for e in events if e["type"] == "PolicyChanged"]
    assert len(changes) == 2
    assert changes[0]["requests_per_minute"] == 60
    assert changes[1]["allowed_ips"] == ["10.0.0.0/8"]
    assert changes[1]["monthly_limit"] == "5.000000"
    as_of = httpx.get(path + "/events", headers=mk, params={"as_of": changes[0]["at"]}).json()
    assert as_of["state"]["requests_per_minute"] == 60
    assert as_of["state"]["allowed_ips"] is None
    this_key = httpx.get(gateway.api + "/key", headers=gateway.auth(created.json()["key"]))
    assert this_key.status_code == 403  # from 127.0.0.1, not in 10.0.0.0/8

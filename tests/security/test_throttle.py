"""Failed authentication is throttled per client address (issue 15): after a burst of 401s a
short ban (429 `auth_throttled`, `retry-after`), counted as a refusal; other addresses and the
banned address's good keys after the ban are unaffected. In process."""

from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from domain.tokens import TokenKind, generate_token
from infrastructure.catalogue import DEMO_BASE_URL
from infrastructure.runtime import open_runtime
from infrastructure.settings import Settings
from tests.support.management_api import CHAT, Api, build_app

BURST = 5


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    runtime = open_runtime(replace(settings, auth_failure_burst=BURST, auth_ban_seconds=60))
    app = build_app(runtime, DEMO_BASE_URL)
    with TestClient(app, client=("203.0.113.7", 50000)) as client:
        yield Api(client, runtime)


def test_a_burst_of_bad_keys_bans_the_address_then_even_a_good_key_waits(api: Api) -> None:
    mk = api.open_account("acme")
    good, _ = api.create_key(mk)
    assert api.call("POST", "/api/v1/chat/completions", good, json=CHAT).status_code == 200
    for _ in range(BURST):
        guess = generate_token(TokenKind.INFERENCE).value  # well formed, unknown
        answer = api.call("POST", "/api/v1/chat/completions", guess, json=CHAT)
        assert answer.status_code == 401
    banned = api.call("POST", "/api/v1/chat/completions", good, json=CHAT)
    assert banned.status_code == 429, banned.text
    assert banned.json()["error"]["code"] == "auth_throttled"
    assert 0 < int(banned.headers["retry-after"]) <= 60
    assert api.call("GET", "/api/v1/keys", mk).status_code == 429  # management routes too
    metrics = api.client.get("/metrics").text
    assert 'lowrouter_refusals_total{reason="auth_throttled"}' in metrics

    # Another address is not banned.
    other = TestClient(api.client.app, client=("198.51.100.9", 40000))
    assert (
        other.post(
            "/api/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {good}"}
        ).status_code
        == 200
    )


def test_failures_below_the_burst_and_successes_never_ban(api: Api) -> None:
    mk = api.open_account("acme")
    good, _ = api.create_key(mk)
    for _ in range(BURST - 1):
        assert api.call("GET", "/api/v1/key", "lr-sk-nonsense").status_code == 401
    for _ in range(10):
        assert api.call("GET", "/api/v1/key", good).status_code == 200

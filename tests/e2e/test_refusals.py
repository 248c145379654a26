"""Every refusal: its status, OpenAI's error shape, a message that says what is wrong (never the
token), and no charge. Upstream failures leave one usage row at cost 0; refusals before the
upstream leave none."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest

from domain.scope import Scope
from domain.tokens import ALPHABET, TokenKind, generate_token
from tests.e2e.conftest import (
    MAX_BODY_BYTES,
    OPERATOR,
    UPSTREAM_TIMEOUT_SECONDS,
    USER_HELLO,
    LiveGateway,
    StartGateway,
)
from tests.fake_upstream import FakeUpstream

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    504: "api_error",
}


def complete(
    gateway: LiveGateway,
    headers: dict[str, str] | None = None,
    body: Any = None,
    content: bytes | Iterator[bytes] | None = None,
    timeout: float = 15,
) -> httpx.Response:
    if body is None and content is None:
        body = {"model": "fake/ok", "messages": USER_HELLO}
    with httpx.Client(timeout=timeout) as client:
        return client.post(
            gateway.api + "/chat/completions",
            headers=gateway.auth() if headers is None else headers,
            json=body if content is None else None,
            content=content,
        )


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    """The OpenAI error shape with this status and code; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"].startswith("req_")
    error = response.json()["error"]
    assert {"message", "type", "code"} <= set(error)
    assert error["code"] == code, error
    assert error["type"] == ERROR_TYPES[status]
    assert isinstance(error["message"], str) and error["message"]
    return error["message"]


# --- 401: who is calling -------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthCase:
    header: Callable[[LiveGateway], str | None]  # the Authorization header, None for none
    code: str
    says: str  # what the message must name


def _revoked(gateway: LiveGateway) -> str:
    key_id, token = gateway.create_key(name="to-revoke")
    gateway.runtime.app.revoke_key(key_id, OPERATOR)
    return f"Bearer {token}"


def _rotated(gateway: LiveGateway) -> str:
    key_id, token = gateway.create_key(name="to-rotate")
    gateway.runtime.app.rotate_key(key_id, OPERATOR, grace=timedelta(0))
    return f"Bearer {token}"


def _bad_checksum(gateway: LiveGateway) -> str:
    token = gateway.token
    position = 20  # inside the random part: the checksum no longer matches
    swapped = ALPHABET[(ALPHABET.index(token[position]) + 1) % len(ALPHABET)]
    return f"Bearer {token[:position]}{swapped}{token[position + 1 :]}"


AUTH_CASES = {
    "missing-header": AuthCase(lambda g: None, "missing_api_key", "No API key"),
    "malformed-key": AuthCase(lambda g: f"Bearer {g.token[:-3]}", "invalid_api_key", "Malformed"),
    "not-a-lowrouter-key": AuthCase(
        lambda g: "Bearer sk-proj-abcdefghijklmnop", "invalid_api_key", "lr-sk-"
    ),
    "bad-checksum": AuthCase(_bad_checksum, "invalid_api_key", "checksum"),
    "unknown-key": AuthCase(
        lambda g: f"Bearer {generate_token(TokenKind.INFERENCE).value}",
        "invalid_api_key",
        "never issued",
    ),
    "revoked-key": AuthCase(_revoked, "revoked_api_key", "revoked"),
    "rotated-past-grace": AuthCase(_rotated, "expired_api_key", "rotated"),
    "management-key": AuthCase(
        lambda g: f"Bearer {g.management_token}", "invalid_api_key", "management key"
    ),
    "double-quotes": AuthCase(lambda g: f'Bearer "{g.token}"', "invalid_api_key", "quotes"),
    "single-quotes": AuthCase(lambda g: f"Bearer '{g.token}'", "invalid_api_key", "quotes"),
    "missing-bearer": AuthCase(lambda g: g.token, "invalid_api_key", "missing `Bearer `"),
    "bearer-equals": AuthCase(lambda g: f"Bearer={g.token}", "invalid_api_key", "'='"),
    "two-spaces": AuthCase(lambda g: f"Bearer  {g.token}", "invalid_api_key", "whitespace"),
    "space-inside-token": AuthCase(
        lambda g: f"Bearer {g.token[:20]} {g.token[20:]}", "invalid_api_key", "whitespace"
    ),
    "tab-after-bearer": AuthCase(lambda g: f"Bearer\t{g.token}", "invalid_api_key", "whitespace"),
    "other-scheme": AuthCase(lambda g: "Basic dXNlcjpwYXNz", "invalid_api_key", "not a bearer"),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=name) for name, case in AUTH_CASES.items()],
)
def test_unauthenticated_completion_is_refused_with_401_naming_the_mistake(
    gateway: LiveGateway, case: AuthCase
) -> None:
    header = case.header(gateway)
    headers = {} if header is None else {"Authorization": header}
    response = complete(gateway, headers)

    message = assert_error(response, 401, case.code)
    assert case.says in message, message
    assert response.headers["www-authenticate"] == "Bearer"
    for secret in (gateway.token, gateway.management_token, header or "-" * 50):
        assert secret[6:38] not in response.text  # never the token's random part
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == []
    assert gateway.upstream.requests == []


def test_sdk_with_an_unknown_key_raises_authentication_error(gateway: LiveGateway) -> None:
    token = generate_token(TokenKind.INFERENCE).value
    client = openai.OpenAI(base_url=gateway.api, api_key=token, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="fake/ok", messages=USER_HELLO)
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert token[6:] not in str(raised.value)
    gateway.assert_nothing_charged()


# --- 403 / 404: what the key may use -------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_model_outside_the_keys_scope_is_refused_with_403_naming_it(
    gateway: LiveGateway, stream: bool
) -> None:
    _, token = gateway.create_key(Scope(models=("fake/ok",)))
    response = complete(
        gateway,
        gateway.auth(token),
        {"model": "fake/stream-no-usage", "messages": USER_HELLO, "stream": stream},
    )
    message = assert_error(response, 403, "model_not_allowed")
    assert "fake/stream-no-usage" in message
    assert response.json()["error"]["param"] == "model"
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == [] and gateway.upstream.requests == []
    # The same key may use what is in its scope.
    assert complete(gateway, gateway.auth(token)).status_code == 200


def test_model_with_no_provider_in_the_keys_region_is_refused_with_403(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway("regions")
    _, eu_token = gateway.create_key(Scope(region="eu"))

    response = complete(gateway, gateway.auth(eu_token))  # fake/ok is served in "us" only
    message = assert_error(response, 403, "region_unavailable")
    assert "fake/ok" in message and "eu" in message and "region" in message
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == [] and gateway.upstream.requests == []

    # A model that has a provider in "eu" is served there, and only there.
    served = complete(
        gateway, gateway.auth(eu_token), {"model": "fake/stream-no-usage", "messages": USER_HELLO}
    )
    assert served.status_code == 200, served.text
    rows = gateway.usage_rows()
    assert len(rows) == 1 and rows[0].region == "eu" and rows[0].provider == "fake-eu"


def test_auto_with_no_model_in_the_keys_region_is_refused_with_403(
    start_gateway: StartGateway,
) -> None:
    gateway = start_gateway("regions")
    _, token = gateway.create_key(Scope(region="ap"))
    response = complete(
        gateway, gateway.auth(token), {"model": "lowrouter/auto", "messages": USER_HELLO}
    )
    message = assert_error(response, 403, "no_model_available")
    assert "ap" in message
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == []


def test_unknown_model_is_refused_with_404_listing_what_is_available(
    gateway: LiveGateway,
) -> None:
    response = complete(gateway, body={"model": "acme/nope", "messages": USER_HELLO})
    message = assert_error(response, 404, "model_not_found")
    assert "acme/nope" in message and "fake/ok" in message
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == []


# --- 400 / 413: the request body -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code"),
    [
        pytest.param(b'{"model": "fake/ok", "messages": [', "invalid_json", id="invalid-json"),
        pytest.param(b"not json at all", "invalid_json", id="not-json"),
        pytest.param(b'{"model": "fake/ok"}', "missing_messages", id="missing-messages"),
        pytest.param(
            b'{"model": "fake/ok", "messages": []}', "missing_messages", id="empty-messages"
        ),
        pytest.param(b'{"messages": [{"role": "user"}]}', "missing_model", id="missing-model"),
        pytest.param(b"[1, 2]", "invalid_request", id="json-array"),
    ],
)
def test_malformed_body_is_refused_with_400(
    gateway: LiveGateway, content: bytes, code: str
) -> None:
    response = complete(gateway, content=content)
    assert_error(response, 400, code)
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == [] and gateway.upstream.requests == []


def _padded_body(size: int) -> bytes:
    head = b'{"model": "fake/ok", "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


@pytest.fixture
def small_body_gateway(start_gateway: StartGateway) -> LiveGateway:
    return start_gateway("small-body")


def test_body_over_the_configured_limit_is_refused_with_413(
    small_body_gateway: LiveGateway,
) -> None:
    gateway = small_body_gateway
    under = complete(gateway, content=_padded_body(1800))
    assert under.status_code == 200, under.text
    spent = gateway.usage_rows()[0].cost

    response = complete(gateway, content=_padded_body(4096))
    message = assert_error(response, 413, "request_too_large")
    assert str(MAX_BODY_BYTES) in message
    assert len(gateway.usage_rows()) == 1  # only the request under the limit
    assert gateway.page().balance == gateway.initial_balance - spent
    assert gateway.open_holds() == []


def test_chunked_body_over_the_limit_without_a_length_is_refused_with_413(
    small_body_gateway: LiveGateway,
) -> None:
    gateway = small_body_gateway
    body = _padded_body(8192)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count as it reads
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    response = complete(gateway, content=chunks())
    assert_error(response, 413, "request_too_large")
    gateway.assert_nothing_charged()
    assert gateway.usage_rows() == [] and gateway.upstream.requests == []


# --- 502 / 504: the upstream failed --------------------------------------------------------------


def assert_failure_recorded_without_charge(
    gateway: LiveGateway, response: httpx.Response, status: str, status_code: int
) -> None:
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.cost, row.status, row.status_code) == (0, status, status_code)
    assert len(gateway.usage_rows()) == 1
    gateway.assert_nothing_charged()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_500_gives_502_recorded_at_no_cost(gateway: LiveGateway, stream: bool) -> None:
    response = complete(
        gateway, body={"model": "fake/error500", "messages": USER_HELLO, "stream": stream}
    )
    message = assert_error(response, 502, "upstream_error")
    assert "not charged" in message
    assert_failure_recorded_without_charge(gateway, response, "upstream_error", 502)


def test_upstream_garbage_gives_502_recorded_at_no_cost(gateway: LiveGateway) -> None:
    response = complete(gateway, body={"model": "fake/garbage", "messages": USER_HELLO})
    message = assert_error(response, 502, "upstream_bad_response")
    assert "invalid response" in message
    assert_failure_recorded_without_charge(gateway, response, "upstream_error", 502)


def test_upstream_hanging_up_mid_body_is_a_truncation_recorded_at_no_cost(
    gateway: LiveGateway,
) -> None:
    # The upstream answered 200, then cut its JSON body off half way: not "unreachable".
    response = complete(gateway, body={"model": "fake/hangup", "messages": USER_HELLO})
    assert_error(response, 502, "upstream_truncated")
    assert_failure_recorded_without_charge(gateway, response, "upstream_truncated", 502)


@pytest.fixture
def impatient_gateway(start_gateway: StartGateway, upstream: FakeUpstream) -> LiveGateway:
    assert upstream.slow_seconds > UPSTREAM_TIMEOUT_SECONDS
    return start_gateway("impatient")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_slow_upstream_gives_504_recorded_at_no_cost(
    impatient_gateway: LiveGateway, stream: bool
) -> None:
    gateway = impatient_gateway
    response = complete(
        gateway, body={"model": "fake/slow", "messages": USER_HELLO, "stream": stream}
    )
    message = assert_error(response, 504, "upstream_timeout")
    assert "timed out" in message and "not charged" in message
    assert_failure_recorded_without_charge(gateway, response, "upstream_timeout", 504)


def test_sdk_sees_an_upstream_failure_as_a_server_error(gateway: LiveGateway) -> None:
    client = openai.OpenAI(base_url=gateway.api, api_key=gateway.token, max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="fake/error500", messages=USER_HELLO)
    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_error"
    gateway.assert_nothing_charged()

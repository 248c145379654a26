"""Every inference API through the real server, metered like chat completions: one usage row with
the right `api`, tokens and cost, the account charged exactly that; the hold before the upstream;
a client hanging up mid-stream charged an estimate (never zero); an upstream failure charged
nothing. Parametrised over every API (tests/e2e/apis.py), on both dialects."""

import json
import re
import threading
import time

import httpx
import pytest

from domain.money import parse_price_per_million
from domain.pricing import PriceSheet, TokenCounts
from tests.e2e.apis import CALLS, STREAMING, ApiCall, answer_text, reported_cost
from tests.e2e.conftest import APIS_PRICES, LiveGateway, StartGateway, micro
from tests.fake_upstream import (
    CACHE_READ,
    CACHE_WRITE,
    REASONING_TOKENS,
    UPSTREAM_COST,
    FakeUpstream,
)

PROMPT_WORDS = 1_000  # a long prompt, most of it a cached prefix
LONG_PROMPT = " ".join(["word"] * PROMPT_WORDS)
PRICES = PriceSheet(*(parse_price_per_million(p) for p in APIS_PRICES))


@pytest.fixture
def apis(start_gateway: StartGateway) -> LiveGateway:
    return start_gateway("apis")


CASES = [(call, False) for call in CALLS] + [(call, True) for call in STREAMING]


@pytest.mark.parametrize(
    ("call", "stream"), CASES, ids=[f"{c.id}{'-stream' if s else ''}" for c, s in CASES]
)
def test_every_api_answers_and_is_charged_exactly_its_one_usage_row(
    apis: LiveGateway, call: ApiCall, stream: bool
) -> None:
    response = call.post(apis, stream=stream)

    assert response.status_code == 200, response.text
    text = answer_text(response)
    assert text == ("2 vectors" if call.api == "embeddings" else "Hello from the fake upstream")
    row = apis.usage_row(response.headers["x-request-id"])
    assert (row.api, row.status, row.streamed, row.cost_source) == (
        call.api,
        "ok",
        stream,
        "reported",
    )
    assert row.model == call.model("ok")
    assert row.provider == ("fake-anthropic" if call.vendor == "claude" else "fake-us")
    embedding = call.api == "embeddings"
    assert (row.prompt_tokens, row.completion_tokens) == ((2, 0) if embedding else (1, 5))
    prices = PriceSheet(parse_price_per_million("0.02"), 0) if embedding else PRICES
    assert row.cost == prices.cost(TokenCounts(row.prompt_tokens, row.completion_tokens)) > 0
    assert reported_cost(response) == row.cost
    # usage.cost is a JSON number with exact decimal digits, not a string
    assert re.search(r'"cost":\s?0\.[0-9]{6}[,}]', response.text), response.text[-400:]
    assert apis.page().balance == apis.initial_balance - row.cost
    assert apis.open_holds() == []


@pytest.mark.parametrize("call", CALLS, ids=[c.id for c in CALLS])
def test_the_hold_is_durable_before_the_upstream_sees_the_request(
    apis: LiveGateway, upstream: FakeUpstream, call: ApiCall
) -> None:
    upstream.slow_seconds = 0.3
    held_seen: list[int] = []

    def watch() -> None:  # when the upstream has the request, the hold must already be there
        deadline = time.monotonic() + 10
        while not upstream.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        # the ledger page itself (durable), not the holds projection, which may catch up only
        # after the answer on a busy machine
        held_seen.append(apis.page().held)

    watcher = threading.Thread(target=watch)
    watcher.start()
    response = call.post(apis, mode="slow")
    watcher.join()

    assert response.status_code == 200, response.text
    row = apis.usage_row(response.headers["x-request-id"])
    assert held_seen == [row.held] and row.held >= row.cost > 0
    assert apis.open_holds() == []


@pytest.mark.parametrize("call", STREAMING, ids=[c.id for c in STREAMING])
def test_a_client_hanging_up_mid_stream_is_charged_an_estimate_never_zero(
    apis: LiveGateway, upstream: FakeUpstream, call: ApiCall
) -> None:
    upstream.slow_seconds = 1.0  # the fake stalls after its first two events
    with httpx.stream(
        "POST",
        apis.api + call.path,
        headers=call.headers(apis.token),
        json=call.body("stall", stream=True),
        timeout=15,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        next(line for line in response.iter_lines() if line.startswith("data:"))
    # The client has gone after the first event.

    [row] = apis.wait_for_usage(request_id)
    assert (row.api, row.status, row.cost_source) == (call.api, "client_closed", "estimated")
    assert row.completion_tokens >= 1 and 0 < row.cost <= row.held
    assert apis.open_holds() == []
    assert apis.page().balance == apis.initial_balance - row.cost


@pytest.mark.parametrize("call", CALLS, ids=[c.id for c in CALLS])
def test_an_upstream_failure_is_recorded_and_charges_nothing(
    apis: LiveGateway, call: ApiCall
) -> None:
    response = call.post(apis, mode="error500")

    assert response.status_code == 502, response.text
    body = response.json()
    if call.api == "messages":  # Anthropic's error shape on this route
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
        assert "not charged" in body["error"]["message"]
    else:
        assert body["error"]["code"] == "upstream_error"
    row = apis.usage_row(response.headers["x-request-id"])
    assert (row.api, row.status, row.cost, row.cost_source) == (
        call.api,
        "upstream_error",
        0,
        "none",
    )
    apis.assert_nothing_charged()


# --- exact prices: cached, cache-write and reasoning tokens; the upstream's own cost --------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_cached_and_reasoning_tokens_are_priced_exactly_and_the_upstream_cost_kept(
    apis: LiveGateway, stream: bool
) -> None:
    body = {
        "model": "fake/cached",
        "messages": [{"role": "user", "content": LONG_PROMPT}],
        "max_tokens": 5,
        "stream": stream,
    }
    response = httpx.post(apis.api + "/chat/completions", headers=apis.auth(), json=body)
    assert response.status_code == 200, response.text
    row = apis.usage_row(response.headers["x-request-id"])
    tokens = TokenCounts(PROMPT_WORDS, 5 + REASONING_TOKENS, CACHE_READ, 0, REASONING_TOKENS)
    assert (
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_prompt_tokens,
        row.reasoning_tokens,
    ) == (tokens.prompt_tokens, tokens.completion_tokens, CACHE_READ, REASONING_TOKENS)
    assert row.cost == PRICES.cost(tokens) < PRICES.cost(TokenCounts(tokens.prompt_tokens, 12))
    assert "over_hold" not in row.flags
    assert row.upstream_cost == UPSTREAM_COST
    assert reported_cost(response) == row.cost


def test_anthropic_cache_reads_and_writes_are_priced_at_their_own_prices(
    apis: LiveGateway,
) -> None:
    body = {
        "model": "claude/cached",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": LONG_PROMPT}],
    }
    headers = {"x-api-key": apis.token}
    response = httpx.post(apis.api + "/messages", headers=headers, json=body)
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    row = apis.usage_row(response.headers["x-request-id"])
    tokens = TokenCounts(PROMPT_WORDS, 5 + REASONING_TOKENS, CACHE_READ, CACHE_WRITE)
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.cache_write_tokens) == (
        tokens.prompt_tokens,
        CACHE_READ,
        CACHE_WRITE,
    )
    assert row.cost == PRICES.cost(tokens) and micro(usage["cost"]) == row.cost
    # Anthropic's shape: input_tokens without the cache
    assert usage["input_tokens"] == PROMPT_WORDS - CACHE_READ - CACHE_WRITE
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (
        CACHE_READ,
        CACHE_WRITE,
    )


def test_a_tool_call_answer_without_usage_is_charged_for_its_arguments(
    apis: LiveGateway,
) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    body = {
        "model": "fake/stream-no-usage",
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": tools,
    }
    response = httpx.post(apis.api + "/chat/completions", headers=apis.auth(), json=body)
    assert response.status_code == 200, response.text
    arguments = response.json()["choices"][0]["message"]["tool_calls"][0]["function"]
    row = apis.usage_row(response.headers["x-request-id"])
    assert row.cost_source == "estimated"
    # the tool's name and arguments are output too: about four characters a token
    assert row.completion_tokens == -(-(len(arguments["name"]) + len(arguments["arguments"])) // 4)


# --- routes ------------------------------------------------------------------------------------


def test_an_unknown_api_path_is_a_404_naming_the_routes_that_exist(apis: LiveGateway) -> None:
    response = httpx.post(apis.api + "/chat/completion", headers=apis.auth(), json={})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    for route in ("/api/v1/chat/completions", "/api/v1/responses", "/api/v1/messages"):
        assert route in error["message"]


def test_models_lists_embedding_models_and_auto_picks_chat_models_only(
    apis: LiveGateway,
) -> None:
    listed = httpx.get(apis.api + "/models", headers=apis.auth()).json()["data"]
    kinds = {m["id"]: m.get("kind") for m in listed}
    assert kinds["fake/embed-ok"] == "embedding" and kinds["fake/ok"] == "chat"
    body = {"model": "lowrouter/auto", "messages": [{"role": "user", "content": "hi"}]}
    auto = httpx.post(apis.api + "/chat/completions", headers=apis.auth(), json=body)
    assert auto.status_code == 200, auto.text
    assert not auto.json()["model"].startswith("fake/embed")
    wrong = httpx.post(
        apis.api + "/embeddings", headers=apis.auth(), json={"model": "fake/ok", "input": "x"}
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "wrong_model_kind")
    responses_on_anthropic = httpx.post(
        apis.api + "/responses", headers=apis.auth(), json={"model": "claude/ok", "input": "x"}
    )
    assert responses_on_anthropic.status_code == 400
    assert responses_on_anthropic.json()["error"]["code"] == "api_not_supported"
    assert apis.usage_rows() == [apis.usage_row(auto.headers["x-request-id"])]


def test_messages_refusals_use_anthropics_error_shape(apis: LiveGateway) -> None:
    response = httpx.post(
        apis.api + "/messages", headers={"x-api-key": "lr-sk-nonsense"}, json={}, timeout=10
    )
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    bad = httpx.post(
        apis.api + "/messages",
        headers={"x-api-key": apis.token},
        json={"model": "claude/ok", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert bad.status_code == 400
    assert json.loads(bad.text)["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.json()["error"]["message"]
    assert apis.usage_rows() == []

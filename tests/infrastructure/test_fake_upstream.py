"""The demo upstream and the fake test upstream speak OpenAI's wire format, streaming and not."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from domain.scope import Scope
from infrastructure.catalogue import AUTO_MODEL, load_catalogue
from infrastructure.demo_provider import demo_upstream_app
from tests.fake_upstream import (
    CACHE_READ,
    FAKE_API_KEY,
    MODES,
    REASONING_TOKENS,
    REPLY_WORDS,
    TOOL_ARGUMENTS,
    UPSTREAM_COST,
    FakeUpstream,
    fake_environ,
    run_fake_upstream,
    write_catalogue,
)

USER = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"}]


def sse_events(lines: Iterator[str]) -> list[Any]:
    """The `data:` payloads of an SSE stream, JSON-decoded except the final [DONE]."""
    events: list[Any] = []
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def streamed_text(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content", "")
        for event in events
        if isinstance(event, dict)
        for choice in event["choices"]
    )


# --- the demo upstream --------------------------------------------------------------------------


@pytest.fixture
def demo() -> Iterator[TestClient]:
    with TestClient(demo_upstream_app()) as client:
        yield client


def test_demo_echoes_the_last_user_message_with_word_counted_usage(demo: TestClient) -> None:
    response = demo.post("/chat/completions", json={"model": "echo", "messages": USER})
    assert response.status_code == 200
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Echo: hello big world",
    }
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_demo_counts_at_least_one_prompt_token(demo: TestClient) -> None:
    response = demo.post("/chat/completions", json={"model": "echo", "messages": []})
    assert response.json()["usage"]["prompt_tokens"] == 1
    assert response.json()["choices"][0]["message"]["content"] == "Echo:"


def test_demo_reads_text_parts_and_stops_at_max_tokens(demo: TestClient) -> None:
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]
    body = {"messages": [{"role": "user", "content": parts}], "max_tokens": 3}
    answer = demo.post("/chat/completions", json=body).json()
    assert answer["choices"][0]["message"]["content"] == "Echo: one two"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 3


def test_demo_streams_one_chunk_per_word_then_usage_then_done(demo: TestClient) -> None:
    body = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    with demo.stream("POST", "/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.iter_lines())
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    word_chunks = [e for e in events[:-2] if e["choices"][0]["delta"].get("content")]
    assert len(word_chunks) == 4
    assert word_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert streamed_text(events) == "Echo: hello big world"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"


def test_demo_stream_without_include_usage_has_no_usage_chunk(demo: TestClient) -> None:
    with demo.stream("POST", "/chat/completions", json={"messages": USER, "stream": True}) as r:
        events = sse_events(r.iter_lines())
    assert events[-1] == "[DONE]"
    assert not any("usage" in e for e in events[:-1])


def test_demo_refuses_a_body_that_is_not_json(demo: TestClient) -> None:
    response = demo.post("/chat/completions", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_demo_lists_its_model_as_a_demo(demo: TestClient) -> None:
    listing = demo.get("/models").json()
    assert listing["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in listing["data"]] == [
        ("echo", "lowrouter-demo"),
        ("echo-embedding", "lowrouter-demo"),
    ]


# --- the fake upstream ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(slow_seconds=1.0) as running:
        yield running


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    upstream.reset()
    upstream.mode = "ok"
    with httpx.Client(base_url=upstream.base_url, timeout=5) as client:
        yield client


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/chat/completions", json={"model": model, "messages": USER, **extra})


def stream_events(client: httpx.Client, model: str, **extra: Any) -> list[Any]:
    body = {"model": model, "messages": USER, "stream": True, **extra}
    with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        return sse_events(response.iter_lines())


def test_fake_serves_on_a_local_port_under_v1(upstream: FakeUpstream) -> None:
    assert upstream.base_url.startswith("http://127.0.0.1:")
    assert upstream.base_url.endswith("/v1")


def test_fake_ok_answers_with_usage_and_records_the_request(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    response = chat(client, "fake-ok", max_tokens=50)
    answer = response.json()
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake upstream"
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    [recorded] = upstream.requests
    assert recorded.path == "/v1/chat/completions"
    assert recorded.body["model"] == "fake-ok"
    assert recorded.body["max_tokens"] == 50


def test_fake_records_the_authorization_header(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    client.post(
        "/chat/completions",
        json={"model": "fake-ok", "messages": USER},
        headers={"Authorization": f"Bearer {FAKE_API_KEY}"},
    )
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {FAKE_API_KEY}"


def test_fake_ok_streams_a_usage_chunk_when_asked(client: httpx.Client) -> None:
    events = stream_events(client, "fake-ok", stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] == 5
    assert streamed_text(events) == "Hello from the fake upstream"


def test_fake_ok_stream_has_no_usage_unless_asked(client: httpx.Client) -> None:
    events = stream_events(client, "fake-ok")
    assert not any("usage" in e for e in events[:-1])


def test_fake_ok_stops_at_max_tokens(client: httpx.Client) -> None:
    answer = chat(client, "fake-ok", max_tokens=2).json()
    assert answer["choices"][0]["message"]["content"] == "Hello from"
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2


def test_fake_stream_no_usage_never_reports_usage(client: httpx.Client) -> None:
    events = stream_events(client, "fake-stream-no-usage", stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == "Hello from the fake upstream"
    assert not any("usage" in e for e in events[:-1])
    assert "usage" not in chat(client, "fake-stream-no-usage").json()


def test_fake_slow_sleeps_before_answering(client: httpx.Client) -> None:
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json={"model": "fake-slow", "messages": USER}, timeout=0.2)
    assert time.monotonic() - started < 0.9
    started = time.monotonic()
    assert chat(client, "fake-slow").status_code == 200
    assert time.monotonic() - started >= 1.0


def test_fake_stall_sends_two_chunks_then_stalls(client: httpx.Client) -> None:
    body = {"model": "fake-stall", "messages": USER, "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx.ReadTimeout),
        client.stream("POST", "/chat/completions", json=body, timeout=0.3) as response,
    ):
        for line in response.iter_lines():
            if line:
                received.append(line)
    assert len(received) == 2


def test_fake_error500_answers_an_openai_error(client: httpx.Client) -> None:
    response = chat(client, "fake-error500")
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"


def test_fake_garbage_is_200_with_a_body_that_is_not_json(client: httpx.Client) -> None:
    response = chat(client, "fake-garbage")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    with pytest.raises(json.JSONDecodeError):
        stream_events(client, "fake-garbage")


def test_fake_hangup_closes_the_connection_mid_response(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        chat(client, "fake-hangup")


def test_fake_hangup_closes_the_stream_after_a_few_chunks(client: httpx.Client) -> None:
    body = {"model": "fake-hangup", "messages": USER, "stream": True}
    received: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if line:
                received.append(line)
    assert len(received) == 3
    assert "[DONE]" not in received


def test_fake_overrun_reports_more_completion_tokens_than_max_tokens(
    client: httpx.Client,
) -> None:
    assert chat(client, "fake-overrun", max_tokens=3).json()["usage"]["completion_tokens"] == 103
    events = stream_events(
        client, "fake-overrun", max_tokens=3, stream_options={"include_usage": True}
    )
    assert events[-2]["usage"]["completion_tokens"] == 103


def test_unknown_model_names_use_the_servers_mode(
    client: httpx.Client, upstream: FakeUpstream
) -> None:
    assert chat(client, "gpt-4o").status_code == 200
    upstream.mode = "error500"
    assert chat(client, "gpt-4o").status_code == 500
    assert chat(client, "fake-ok").status_code == 200


def test_fake_lists_one_model_per_mode(client: httpx.Client) -> None:
    listing = client.get("/models").json()
    assert [m["id"] for m in listing["data"]] == [f"fake-{mode}" for mode in MODES]


def test_fake_shuts_down_promptly_even_with_a_slow_request_pending() -> None:
    with run_fake_upstream(slow_seconds=30) as upstream:
        url = upstream.base_url
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/chat/completions", json={"model": "fake-slow"}, timeout=0.2)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0  # the sleep wakes up; no 2 s graceful timeout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", timeout=1)


def test_fake_refuses_an_unknown_default_mode() -> None:
    with pytest.raises(ValueError, match="unknown mode"), run_fake_upstream(mode="sloww"):
        pass


# --- the catalogue file pointing at it -----------------------------------------------------------


def test_written_catalogue_loads_and_routes_to_the_fake(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = write_catalogue(
        tmp_path / "lowrouter.toml",
        upstream.base_url,
        regions=("us", "eu"),
        prices={"slow": ("0.01", "0.01")},
    )
    catalogue = load_catalogue(path, fake_environ())
    assert set(catalogue.models) == {f"fake/{mode}" for mode in MODES}
    entry, provider = catalogue.candidates("fake/ok", Scope(region="eu"))[0]
    assert (entry.upstream_model, provider.name, provider.region) == ("fake-ok", "fake-eu", "eu")
    assert provider.base_url == upstream.base_url
    assert provider.api_key == FAKE_API_KEY
    assert catalogue.candidates(AUTO_MODEL, Scope())[0][0].id == "fake/slow"


# --- the other APIs and the Anthropic dialect ----------------------------------------------------

TOOLS_CHAT = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
TOOLS_ANTHROPIC = [{"name": "get_weather", "input_schema": {"type": "object"}}]


def test_fake_messages_answers_in_anthropics_shape_and_requires_max_tokens(
    client: httpx.Client,
) -> None:
    body = {"model": "fake-cached", "max_tokens": 50, "messages": USER[1:], "system": "be brief"}
    answer = client.post("/messages", json=body).json()
    assert answer["type"] == "message" and answer["content"][0]["text"] == " ".join(REPLY_WORDS)
    # "cached": of the prompt's words ("be brief" and "hello big world"), the cache read and
    # written are at most what the prompt has
    usage = answer["usage"]
    prompt = 5
    cached = min(CACHE_READ, prompt)
    assert usage["cache_read_input_tokens"] == cached
    total = usage["input_tokens"] + cached + usage["cache_creation_input_tokens"]
    assert total == prompt
    missing = client.post("/messages", json={"model": "fake-ok", "messages": USER[1:]})
    assert missing.status_code == 400 and missing.json()["type"] == "error"


def test_fake_messages_streams_events_and_calls_a_tool(client: httpx.Client) -> None:
    body = {
        "model": "fake-ok",
        "max_tokens": 50,
        "messages": USER[1:],
        "tools": TOOLS_ANTHROPIC,
        "stream": True,
    }
    with client.stream("POST", "/messages", json=body) as response:
        lines = list(response.iter_lines())
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events][:2] == ["message_start", "ping"]
    assert events[2]["content_block"]["type"] == "tool_use"
    arguments = "".join(
        e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
    )
    assert json.loads(arguments) == TOOL_ARGUMENTS
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-1]["type"] == "message_stop"
    assert sum(line.startswith("event: ") for line in lines) == len(events)


def test_fake_chat_calls_a_tool_until_it_has_the_result(client: httpx.Client) -> None:
    call = chat(client, "fake-ok", tools=TOOLS_CHAT).json()["choices"][0]
    assert call["finish_reason"] == "tool_calls"
    function = call["message"]["tool_calls"][0]["function"]
    assert json.loads(function["arguments"]) == TOOL_ARGUMENTS
    result = {"role": "tool", "tool_call_id": "x", "content": "18C"}
    body = {"model": "fake-ok", "messages": [*USER, result], "tools": TOOLS_CHAT}
    answer = client.post("/chat/completions", json=body).json()["choices"][0]
    assert answer["finish_reason"] == "stop"


def test_fake_cached_chat_reports_cached_reasoning_tokens_and_its_own_cost(
    client: httpx.Client,
) -> None:
    usage = chat(client, "fake-cached").json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == min(CACHE_READ, 5)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == REASONING_TOKENS
    assert usage["cost"] == float(UPSTREAM_COST)


def test_fake_serves_responses_completions_and_embeddings(client: httpx.Client) -> None:
    response = client.post("/responses", json={"model": "fake-ok", "input": "hi there"}).json()
    assert response["output"][0]["content"][0]["text"] == " ".join(REPLY_WORDS)
    assert (response["usage"]["input_tokens"], response["usage"]["output_tokens"]) == (2, 5)
    with client.stream(
        "POST", "/responses", json={"model": "fake-ok", "input": "hi", "stream": True}
    ) as streamed:
        events = sse_events(streamed.iter_lines())
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 5
    legacy = client.post("/completions", json={"model": "fake-ok", "prompt": "hi"}).json()
    assert legacy["choices"][0]["text"] == " ".join(REPLY_WORDS)
    vectors = client.post("/embeddings", json={"model": "fake-ok", "input": ["a", "b c"]}).json()
    assert len(vectors["data"]) == 2 and vectors["usage"]["prompt_tokens"] == 3

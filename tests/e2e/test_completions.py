"""Chat completions through a real server: the openai SDK, httpx, and the seed page's curl command.

Every answer names the catalogue model, and its `usage.cost` is exactly what the ledger recorded
for that request id.
"""

import json
import os
import re
import subprocess
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.e2e.conftest import USER_HELLO, LiveGateway, micro

# Copied verbatim from the seed page "Create your first API key" (section "Use it").
SEED_CURL = """curl https://lowrouter.ai/api/v1/chat/completions \\
  -H "Authorization: Bearer $LOWROUTER_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "lowrouter/auto",
    "messages": [{"role": "user", "content": "Hello"}]
  }'"""


def sdk(gateway: LiveGateway, token: str | None = None) -> OpenAI:
    # No retries: a refusal or failure must reach the test as it was sent.
    return OpenAI(base_url=gateway.api, api_key=token or gateway.token, max_retries=0, timeout=30)


def sse_payloads(lines: list[str]) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except [DONE]."""
    payloads: list[Any] = []
    for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


# --- the openai SDK ------------------------------------------------------------------------------


def test_sdk_completion_names_the_catalogue_model_and_reports_the_recorded_cost(
    gateway: LiveGateway,
) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="fake/ok", messages=USER_HELLO
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]

    assert completion.model == "fake/ok"
    assert completion.choices[0].message.content == "Hello from the fake upstream"
    assert completion.usage is not None
    cost = completion.usage.model_extra["cost"]
    # A JSON number written with exact decimal digits, as OpenRouter sends it (0.3 changelog).
    assert isinstance(cost, float)
    assert re.search(rb'"cost":0\.[0-9]{6}[,}]', raw.http_response.content)
    row = gateway.usage_row(request_id)
    assert micro(cost) == row.cost > 0
    assert (row.model, row.provider, row.region, row.status) == ("fake/ok", "fake-us", "us", "ok")
    assert (row.prompt_tokens, row.completion_tokens) == (1, 5)
    assert completion.usage.prompt_tokens == 1 and completion.usage.completion_tokens == 5
    assert row.streamed is False
    assert row.key_id == str(gateway.key_id) and row.key_name == "e2e-key"
    assert row.user_agent.startswith("OpenAI/Python")
    assert row.client_ip == "127.0.0.1"
    assert gateway.page().balance == gateway.initial_balance - row.cost
    assert gateway.open_holds() == []
    assert gateway.upstream.bodies[-1]["model"] == "fake-ok"


def test_sdk_stream_ends_with_a_usage_chunk_whose_cost_was_recorded(gateway: LiveGateway) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="fake/ok", messages=USER_HELLO, stream=True
    )
    request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    assert {c.model for c in chunks} == {"fake/ok"}
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    row = gateway.usage_row(request_id)
    assert micro(final.usage.model_extra["cost"]) == row.cost > 0
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (1, 5)
    assert row.streamed is True and row.status == "ok"
    # The gateway asked the upstream for usage although the client did not.
    assert gateway.upstream.bodies[-1]["stream_options"] == {"include_usage": True}
    assert gateway.open_holds() == []


# --- httpx ---------------------------------------------------------------------------------------


def test_httpx_completion_cost_matches_the_usage_row(gateway: LiveGateway) -> None:
    response = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "fake/ok", "messages": USER_HELLO, "max_tokens": 3},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "fake/ok"
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert response.headers["x-lowrouter-provider"] == "fake-us"
    row = gateway.usage_row(response.headers["x-request-id"])
    assert micro(body["usage"]["cost"]) == row.cost
    assert body["usage"]["completion_tokens"] == row.completion_tokens == 3
    assert body["usage"]["total_tokens"] == row.prompt_tokens + row.completion_tokens


def test_raw_sse_stream_is_chunks_then_a_usage_chunk_with_cost_then_done(
    gateway: LiveGateway,
) -> None:
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "fake/ok", "messages": USER_HELLO, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        payloads = sse_payloads(list(response.iter_lines()))

    assert payloads[-1] == "[DONE]"
    usage_chunk = payloads[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["model"] == "fake/ok"
    assert set(usage_chunk["usage"]) >= {"prompt_tokens", "completion_tokens", "cost"}
    content_chunks = payloads[:-2]
    assert content_chunks and all(c["choices"] and "usage" not in c for c in content_chunks)
    assert payloads.count("[DONE]") == 1
    row = gateway.usage_row(request_id)
    assert micro(usage_chunk["usage"]["cost"]) == row.cost > 0


def test_stream_without_upstream_usage_is_charged_from_the_streamed_text(
    gateway: LiveGateway,
) -> None:
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "fake/stream-no-usage", "messages": USER_HELLO, "stream": True},
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        payloads = sse_payloads(list(response.iter_lines()))

    assert payloads[-1] == "[DONE]"
    usage = payloads[-2]["usage"]
    row = gateway.usage_row(request_id)
    assert row.completion_tokens == usage["completion_tokens"] > 0
    assert micro(usage["cost"]) == row.cost > 0


def test_completion_without_upstream_usage_is_charged_from_the_text(gateway: LiveGateway) -> None:
    response = httpx.post(
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": "fake/stream-no-usage", "messages": USER_HELLO},
    )
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert row.completion_tokens == usage["completion_tokens"] > 0
    assert row.prompt_tokens == usage["prompt_tokens"] > 0
    assert micro(usage["cost"]) == row.cost > 0


def test_every_response_carries_a_request_id(gateway: LiveGateway) -> None:
    with httpx.Client(base_url=gateway.api) as client:
        responses = [
            client.get("/models", headers=gateway.auth()),
            client.get("/key", headers=gateway.auth()),
            client.get("/models"),
            client.post("/chat/completions", headers=gateway.auth(), content=b"{"),
            client.get("/nowhere"),
        ]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_unknown_route_and_wrong_method_answer_in_the_openai_error_shape(
    gateway: LiveGateway,
) -> None:
    missing = httpx.get(gateway.api + "/nowhere", headers=gateway.auth())
    wrong = httpx.get(gateway.api + "/chat/completions", headers=gateway.auth())
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
    for response in (missing, wrong):
        assert {"message", "type", "code"} <= set(response.json()["error"])


# --- the seed page's curl command ----------------------------------------------------------------


def test_seed_curl_command_works_verbatim_against_the_gateway(gateway: LiveGateway) -> None:
    command = SEED_CURL.replace("https://lowrouter.ai", gateway.url)
    assert command.count(gateway.url) == 1
    result = subprocess.run(
        ["bash", "-c", command],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOWROUTER_API_KEY": gateway.token},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    # lowrouter/auto picks the cheapest model the key may use: fake/ok in this catalogue.
    assert body["model"] == "fake/ok"
    rows = gateway.usage_rows()
    assert len(rows) == 1
    assert rows[0].model == body["model"]
    assert micro(body["usage"]["cost"]) == rows[0].cost
    assert rows[0].user_agent.startswith("curl/")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_sdk_auto_model_answers_with_the_model_that_served(
    gateway: LiveGateway, stream: bool
) -> None:
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="lowrouter/auto", messages=USER_HELLO, stream=stream
    )
    request_id = raw.headers["x-request-id"]
    if stream:
        chunks = list(raw.parse())
        model = chunks[-1].model
        cost = chunks[-1].usage.model_extra["cost"]
    else:
        completion = raw.parse()
        model = completion.model
        cost = completion.usage.model_extra["cost"]
    row = gateway.usage_row(request_id)
    assert model == row.model == "fake/ok"
    assert micro(cost) == row.cost

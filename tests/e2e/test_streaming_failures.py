"""Streams that do not end well: the client hangs up, the upstream breaks off or sends garbage.

Each leaves exactly one usage row and no open hold; what was produced is charged, never more.
"""

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import USER_HELLO, LiveGateway, micro
from tests.fake_upstream import FakeUpstream


def read_stream(gateway: LiveGateway, model: str) -> tuple[httpx.Response, list[Any]]:
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": model, "messages": USER_HELLO, "stream": True},
        timeout=15,
    ) as response:
        payloads = [
            line[5:].strip() if line[5:].strip() == "[DONE]" else json.loads(line[5:])
            for line in response.iter_lines()
            if line.startswith("data:")
        ]
    return response, payloads


@pytest.mark.parametrize("how", ["stall", "chunk-delay"])
def test_client_hanging_up_mid_stream_is_charged_for_what_was_produced(
    gateway: LiveGateway, upstream: FakeUpstream, how: str
) -> None:
    if how == "stall":
        model = "fake/stall"  # two chunks, then a long pause
    else:
        model, upstream.chunk_delay = "fake/ok", 0.5
    with httpx.stream(
        "POST",
        gateway.api + "/chat/completions",
        headers=gateway.auth(),
        json={"model": model, "messages": USER_HELLO, "stream": True},
        timeout=15,
    ) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        first = next(line for line in response.iter_lines() if line.startswith("data:"))
        assert json.loads(first[5:])["choices"][0]["delta"]["content"] == "Hello"
    # The client has closed the connection after the first chunk.

    rows = gateway.wait_for_usage(request_id)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row.completion_tokens > 0
    assert 0 < row.cost <= row.held
    assert row.status == "client_closed" and row.streamed is True
    assert gateway.open_holds() == []
    page = gateway.page()
    assert page.held == 0
    assert page.balance == gateway.initial_balance - row.cost
    assert len(gateway.usage_rows()) == 1


def test_upstream_breaking_off_a_stream_reports_an_error_and_charges_what_was_produced(
    gateway: LiveGateway,
) -> None:
    response, payloads = read_stream(gateway, "fake/hangup")  # three chunks, then the socket drops

    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "upstream_stream_error"
    usage = payloads[-2]["usage"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status, row.status_code) == ("upstream_error", 502)
    assert row.completion_tokens == usage["completion_tokens"] > 0
    assert micro(usage["cost"]) == row.cost > 0
    assert gateway.open_holds() == []


def test_upstream_streaming_garbage_is_an_upstream_error_at_no_cost(
    gateway: LiveGateway,
) -> None:
    response, payloads = read_stream(gateway, "fake/garbage")

    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert response.status_code == 502 or errors, payloads
    row = gateway.usage_row(response.headers["x-request-id"])
    assert row.status != "ok"
    gateway.assert_nothing_charged()

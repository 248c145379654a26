"""Streams that do not end well: the client hangs up, the upstream breaks off or sends garbage.

Each leaves exactly one usage row and no open hold; what was produced is charged, never more.
"""

import json
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import USER_HELLO, LiveGateway, StartGateway, micro
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


def test_a_stream_broken_off_after_content_is_truncated_and_charged_what_was_delivered(
    gateway: LiveGateway,
) -> None:
    response, payloads = read_stream(gateway, "fake/hangup")  # three chunks, then the socket drops

    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "upstream_stream_error"
    usage = payloads[-2]["usage"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status, row.status_code, row.cost_source) == (
        "upstream_truncated",
        502,
        "estimated",
    )
    assert row.completion_tokens == usage["completion_tokens"] > 0
    assert micro(usage["cost"]) == row.cost > 0
    assert gateway.open_holds() == []


def test_a_stream_broken_off_before_any_content_is_an_upstream_error_at_no_cost(
    gateway: LiveGateway, upstream: FakeUpstream
) -> None:
    upstream.hangup_after = 0  # the headers, then the socket drops
    response, payloads = read_stream(gateway, "fake/hangup")

    errors = stream_errors(payloads)
    assert response.status_code == 502 or len(errors) == 1, payloads
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status, row.status_code, row.cost_source) == ("upstream_error", 502, "none")
    gateway.assert_nothing_charged()


def test_upstream_streaming_garbage_is_an_upstream_error_at_no_cost(
    gateway: LiveGateway,
) -> None:
    response, payloads = read_stream(gateway, "fake/garbage")

    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert response.status_code == 502 or errors, payloads
    row = gateway.usage_row(response.headers["x-request-id"])
    assert row.status != "ok"
    gateway.assert_nothing_charged()


def stream_errors(payloads: list[Any]) -> list[Any]:
    return [p for p in payloads if isinstance(p, dict) and "error" in p]


def test_a_stream_ended_without_done_or_usage_is_truncated_and_charged_as_delivered(
    gateway: LiveGateway,
) -> None:
    response, payloads = read_stream(gateway, "fake/truncate")  # three chunks, a clean close

    assert response.status_code == 200
    errors = stream_errors(payloads)
    assert len(errors) == 1 and "before its end" in errors[0]["error"]["message"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status, row.status_code, row.cost_source) == (
        "upstream_truncated",
        502,
        "estimated",
    )
    assert row.completion_tokens > 0 and 0 < row.cost <= row.held
    assert micro(payloads[-2]["usage"]["cost"]) == row.cost
    assert gateway.open_holds() == []


def test_a_stream_that_only_drips_comments_is_cut_at_the_idle_deadline(
    start_gateway: StartGateway, upstream: FakeUpstream
) -> None:
    gateway = start_gateway("deadlines")  # idle 0.5 s
    upstream.slow_seconds = 5  # comments every 50 ms for 5 s: bytes, but no event
    response, payloads = read_stream(gateway, "fake/drip")

    errors = stream_errors(payloads)
    assert len(errors) == 1 and "deadline" in errors[0]["error"]["message"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert (row.status, row.status_code, row.cost_source) == ("upstream_timeout", 504, "estimated")
    assert 0 < row.cost <= row.held  # what was delivered before it stalled
    assert row.latency_ms < 4000  # cut at the idle deadline, not after the drip
    assert gateway.open_holds() == []


def test_an_event_bigger_than_the_limit_breaks_the_stream_off(
    gateway: LiveGateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    import infrastructure.dialects.sse as sse

    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 64 * 1024)
    upstream.huge_bytes = 1024 * 1024
    response, payloads = read_stream(gateway, "fake/huge")

    errors = stream_errors(payloads)
    assert len(errors) == 1 and "EventTooLarge" in errors[0]["error"]["message"]
    row = gateway.usage_row(response.headers["x-request-id"])
    assert row.status == "upstream_error" and 0 < row.cost <= row.held
    assert gateway.open_holds() == []

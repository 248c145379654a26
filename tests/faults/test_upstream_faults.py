"""Upstream misbehaviours and long streams, then the books checked from the raw event log:
every answered request settled once at the cost it was told, nothing charged twice, no hold
open, balances recomputed, the hash chain verified."""

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import infrastructure.dialects.sse as sse
import infrastructure.upstream as upstream_module
from tests.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.faults import running_gateway
from tests.support.ledger_check import check_books, replay

pytestmark = pytest.mark.faults

MISBEHAVIOURS = [
    ("fake/ok", False, 200),
    ("fake/ok", True, 200),
    ("fake/stream-no-usage", True, 200),
    ("fake/truncate", True, 200),  # ends without [DONE] or usage: an error event, charged
    ("fake/truncate", False, 502),  # a JSON body cut mid-read
    ("fake/hangup", True, 200),  # the connection drops mid-stream
    ("fake/hangup", False, 502),
    ("fake/garbage", True, 200),
    ("fake/garbage", False, 502),
    ("fake/error500", False, 502),
    ("fake/error500", True, 502),
    ("fake/drip", True, 200),  # only comments after two chunks: cut at the idle deadline
    ("fake/huge", True, 200),  # one event over the limit: broken off, not a memory spike
    ("fake/huge", False, 502),  # a whole body over the limit: an upstream error, charged nothing
    ("fake/slow", False, 504),  # slower than the per-read timeout
    ("fake/overrun", False, 200),  # reports more than the hold: capped, flagged
]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(slow_seconds=4.0) as upstream:
        yield upstream


def test_every_upstream_misbehaviour_leaves_honest_books(
    database_url: str, tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "MAX_EVENT_BYTES", 256 * 1024)
    monkeypatch.setattr(upstream_module, "MAX_BODY_BYTES", 256 * 1024)
    upstream.huge_bytes = 1024 * 1024
    with running_gateway(database_url, tmp_path, upstream) as gateway:
        with httpx.Client(timeout=20) as client:
            results: dict[tuple[str, bool], int] = {}
            threads = [
                threading.Thread(
                    target=lambda m=model, s=stream: results.__setitem__(
                        (m, s), gateway.call(client, m, s)
                    )
                )
                for model, stream, _ in MISBEHAVIOURS
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        assert {(m, s): code for m, s, code in MISBEHAVIOURS} == results
        books = check_books(gateway.runtime, gateway.told)
        statuses = {event.status for events in books.settled.values() for event in events}
        assert {"ok", "upstream_truncated", "upstream_timeout", "upstream_error"} <= statuses
        assert len(books.settled) == len(MISBEHAVIOURS)


def test_a_stream_longer_than_the_hold_timeout_is_never_settled_behind_its_back(
    database_url: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.slow_seconds = 1.5  # two chunks, then 1.5 s of silence (under the idle deadline)
    env = {"LOWROUTER_UPSTREAM_IDLE_SECONDS": "3", "LOWROUTER_MAX_REQUEST_SECONDS": "10"}
    with running_gateway(database_url, tmp_path, upstream, env) as gateway:
        reconciled: list[int] = []
        stop = threading.Event()

        def reconcile_all_along() -> None:  # hold timeout 0.3 s: every pass sees it stale
            while not stop.is_set():
                reconciled.append(gateway.runtime.reconcile())
                time.sleep(0.1)

        reconciler = threading.Thread(target=reconcile_all_along)
        reconciler.start()
        try:
            with httpx.Client(timeout=20) as client:
                assert gateway.call(client, "fake/stall", True) == 200
        finally:
            stop.set()
            reconciler.join()
        assert len(reconciled) >= 5 and sum(reconciled) == 0
        books = check_books(gateway.runtime, gateway.told)
        (settlement,) = (events[0] for events in books.settled.values())
        assert settlement.status == "ok" and settlement.cost < settlement.held


def test_a_client_hanging_up_mid_stream_is_charged_once_for_what_it_got(
    database_url: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    with running_gateway(database_url, tmp_path, upstream) as gateway:
        headers = {"Authorization": f"Bearer {gateway.token}"}
        with httpx.Client(timeout=20) as client:
            for _ in range(5):
                body = gateway.body("fake/stall", True)
                with client.stream("POST", gateway.api, json=body, headers=headers) as response:
                    next(line for line in response.iter_lines() if line.startswith("data:"))
        deadline = time.monotonic() + 10
        while len((books := replay(gateway.runtime)).settled) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert all(e[0].status == "client_closed" and e[0].cost > 0 for e in books.settled.values())
        check_books(gateway.runtime, {})


def test_a_client_that_stops_reading_is_cut_at_the_request_deadline_and_charged_as_a_hang_up(
    database_url: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """An endless stream to a client whose receive window is full: the writes block, and only
    the request's total deadline (2 s here) ends it — the connection dropped, one settlement
    for what was delivered, as a hang-up is charged."""
    env = {"LOWROUTER_MAX_REQUEST_SECONDS": "2", "LOWROUTER_UPSTREAM_IDLE_SECONDS": "2"}
    with running_gateway(database_url, tmp_path, upstream, env) as gateway:
        body = json.dumps(gateway.body("fake/endless", True)).encode()
        head = (
            f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {gateway.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        client.settimeout(10)
        client.connect(("127.0.0.1", int(gateway.url.rsplit(":", 1)[1])))
        try:
            client.sendall(head + body)
            received = b""
            while b"\r\n\r\n" not in received:
                received += client.recv(4096)
            headers = received.split(b"\r\n\r\n")[0].decode().lower()
            assert headers.startswith("http/1.1 200"), headers
            request_id = headers.split("x-request-id: ")[1].split("\r\n")[0]
            stopped = time.monotonic()  # from here on the client reads nothing

            deadline = stopped + 20
            while not (books := replay(gateway.runtime)).settled.get(request_id):
                assert time.monotonic() < deadline, "never settled: the writes block forever"
                time.sleep(0.1)
            assert time.monotonic() - stopped < 10
            (settlement,) = books.settled[request_id]
            assert (settlement.status, settlement.cost_source) == ("client_closed", "estimated")
            assert 0 < settlement.cost <= settlement.held
            assert settlement.completion_tokens > 0  # what was delivered, not just one token

            # The gateway dropped the connection: what the buffers held, then the end.
            try:
                while client.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass
        finally:
            client.close()
        check_books(gateway.runtime, {})

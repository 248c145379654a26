"""Upstream misbehaviours and long streams, then the books checked from the raw event log:
every answered request settled once at the cost it was told, nothing charged twice, no hold
open, balances recomputed, the hash chain verified."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import infrastructure.dialects.sse as sse
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

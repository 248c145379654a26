"""A real PostgreSQL restart (`pg_ctl restart -m fast`, every session ended) under light load,
on a private cluster the test starts (tests/support/private_postgres.py). Requests during the
restart are refused (503 `store_unavailable`) or answered and settled once the server is back;
then the books are checked from the raw event log: every answered request has exactly one
settlement at the cost it was told, nothing is charged twice, no hold is left open."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.faults import Gateway, running_gateway
from tests.support.ledger_check import check_books, replay
from tests.support.private_postgres import private_postgres

pytestmark = pytest.mark.faults

CLIENTS = 2


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(chunk_delay=0.05) as upstream:  # a stream takes about 0.3 s
        yield upstream


def load(gateway: Gateway, index: int, stop: threading.Event, outcomes: list[object]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                outcomes.append(gateway.call(client, "fake/ok", index % 2 == 0))
            except httpx.HTTPError as error:
                outcomes.append(type(error).__name__)


def test_a_postgresql_restart_under_load_leaves_honest_books(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with private_postgres() as postgres, running_gateway(postgres.url, tmp_path, upstream) as gw:
        stop, outcomes = threading.Event(), list[object]()
        threads = [
            threading.Thread(target=load, args=(gw, i, stop, outcomes)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        try:

            def answered() -> int:
                return sum(1 for status in list(gw.statuses.values()) if status == 200)

            def wait_for(count: int) -> None:
                deadline = time.monotonic() + 30
                while answered() < count:
                    assert time.monotonic() < deadline, f"the load stalled: {outcomes[-5:]}"
                    time.sleep(0.05)

            wait_for(6)
            before = answered()
            restarting = time.monotonic()
            postgres.restart()
            restarted = time.monotonic()
            wait_for(before + 6)  # answered again after the restart
            back = time.monotonic() - restarted
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)

        assert set(outcomes) <= {200, 503}, set(outcomes)
        deadline = time.monotonic() + 30  # a settlement that waited out the restart lands
        while not all(r in replay(gw.runtime).settled for r in gw.told):
            assert time.monotonic() < deadline, "a settlement never landed"
            time.sleep(0.1)
        gw.runtime.reconcile()
        check_books(gw.runtime, gw.told, refused=gw.refused)
        print(
            f"\nrestart took {restarted - restarting:.2f} s, answered again "
            f"{back:.2f} s after it; {len(gw.told)} answered, {len(gw.refused)} refused"
        )

"""Two gateway processes on one SQLite file, concurrent requests against both on one key with a
daily limit: the limit admits exactly what fits, every answer is charged once at the cost it was
told, and the books check from the raw event log. The gateways run with
LOWROUTER_BACKGROUND=external and no background process (two more interpreters to start on a
busy machine; spend and limits never wait for one): the test's own runtime is the third writer."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from domain.scope import Scope
from infrastructure.catalogue import DEMO_MODEL
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings
from tests.support.faults import OPERATOR, Gateway
from tests.support.ledger_check import check_books, replay
from tests.support.processes import (
    free_port,
    gateway_environment,
    start_gateway,
    stop,
    wait_until_up,
)
from tests.support.stores import PEPPER

pytestmark = pytest.mark.faults

FITS = 12  # requests the daily limit is sized to admit
CLIENTS = 6


@pytest.fixture
def runtime(sqlite_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=sqlite_url,
    )
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


def test_two_processes_on_one_sqlite_file_hold_a_daily_limit_exactly(
    runtime: Runtime, sqlite_url: str, tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    env = gateway_environment(sqlite_url, tmp_path, LOWROUTER_BACKGROUND="external")
    processes = [start_gateway(env, port) for port in ports]
    try:
        for port, process in zip(ports, processes, strict=True):
            wait_until_up(port, process)
        ledger = runtime.app
        account = ledger.open_account("sqlite-pair", OPERATOR, credits=10**9).account
        probe_token = ledger.create_key(account.id, "probe", Scope(), OPERATOR).token.value
        probe = Gateway(f"http://127.0.0.1:{ports[0]}", runtime, probe_token, account.id)
        with httpx.Client(timeout=30) as client:
            assert probe.call(client, DEMO_MODEL) == 200
        ((probe_id, cost),) = probe.told.items()
        hold = replay(runtime).reserved[probe_id]
        assert 0 < cost < hold
        # The n-th request fits while (n - 1) * cost + hold <= limit: exactly FITS of them.
        limit = hold + (FITS - 1) * cost
        token = ledger.create_key(account.id, "daily", Scope(daily_limit=limit), OPERATOR).token
        gateways = [
            Gateway(f"http://127.0.0.1:{port}", runtime, token.value, account.id) for port in ports
        ]

        def client_loop(first: int) -> None:
            """Alternates between the processes until refused by both in a row (a refusal can
            be another request's hold in flight)."""
            refusals, turn = 0, first
            with httpx.Client(timeout=30) as client:
                while refusals < 2:
                    status = gateways[turn % 2].call(client, DEMO_MODEL)
                    refusals, turn = refusals + 1 if status == 429 else 0, turn + 1

        clients = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        with httpx.Client(timeout=30) as client:  # what is left, one at a time, both processes
            turn = 0
            while gateways[turn % 2].call(client, DEMO_MODEL) == 200:
                # Until its settlement lands (just after the answer: README, "Settling after the
                # answer") the other process still counts the hold against the limit.
                landed(runtime, list(gateways[turn % 2].told)[-1])
                turn += 1
            assert gateways[(turn + 1) % 2].call(client, DEMO_MODEL) == 429  # full on both

        statuses = {r: s for g in gateways for r, s in g.statuses.items()}
        told = {r: c for g in gateways for r, c in g.told.items() if statuses[r] == 200}
        refused = {r for r, s in statuses.items() if s != 200}
        assert set(statuses.values()) == {200, 429}, statuses
        assert len(told) == FITS, f"{len(told)} admitted, {FITS} fit"
        assert set(told.values()) == {cost}
        assert sum(told.values()) <= limit
        for gateway in gateways:  # both processes served a share
            assert any(s == 200 for s in gateway.statuses.values())
        check_books(runtime, {**told, **probe.told}, refused=refused)
    finally:
        for process in processes:
            stop(process, timeout=30)


def landed(runtime: Runtime, request_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while request_id not in replay(runtime).settled and time.monotonic() < deadline:
        time.sleep(0.02)

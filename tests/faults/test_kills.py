"""kill -9 under mixed load: first the background process (projections, reconciler, chain),
then the gateway worker with streams in flight (on SQLite, on PostgreSQL, and on PostgreSQL
through transaction-mode PgBouncer). A new background process takes over; once the
dead gateway's lease has expired its reconciler settles the open holds. Then the books are
checked from the raw event log."""

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.fake_upstream import FakeUpstream, fake_environ, run_fake_upstream, write_catalogue
from tests.hosts.pgbouncer import PgBouncer
from tests.support.faults import OPERATOR, Gateway
from tests.support.ledger_check import check_books, replay
from tests.support.processes import (
    free_port,
    gateway_environment,
    start_background,
    start_gateway,
    wait_until_up,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(chunk_delay=0.1) as upstream:  # a stream takes about half a second
        yield upstream


def test_kill_9_of_the_background_process_and_the_gateway_under_load(
    database_url: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    kill_both_under_load(database_url, database_url, {}, tmp_path, upstream)


def test_kill_9_of_both_through_transaction_mode_pgbouncer(
    postgres_url: str,
    pgbouncers: dict[str, PgBouncer],
    tmp_path: Path,
    upstream: FakeUpstream,
) -> None:
    """The gateway and the background process reach PostgreSQL through PgBouncer (LISTEN
    straight to it); this test's own process reads the books directly."""
    route = {
        "LOWROUTER_DATABASE_POOLER": "transaction",
        "LOWROUTER_DIRECT_DATABASE_URL": postgres_url,
    }
    bounced = pgbouncers["transaction"].url_for(postgres_url)
    kill_both_under_load(postgres_url, bounced, route, tmp_path, upstream)


def kill_both_under_load(
    database_url: str,
    processes_url: str,
    route: dict[str, str],
    tmp_path: Path,
    upstream: FakeUpstream,
) -> None:
    """`processes_url`: how the gateway and the background process reach `database_url`."""
    catalogue = write_catalogue(tmp_path / "lowrouter.toml", upstream.base_url)
    env = gateway_environment(
        processes_url,
        tmp_path,
        **fake_environ(),
        **route,
        LOWROUTER_CONFIG=str(catalogue),
        LOWROUTER_BACKGROUND="external",
        LOWROUTER_PROCESS_LEASE_SECONDS="1",
        LOWROUTER_HOLD_TIMEOUT_SECONDS="1",
        LOWROUTER_RECONCILE_INTERVAL_SECONDS="1",
    )
    runtime_env = gateway_environment(database_url, tmp_path, LOWROUTER_CONFIG=str(catalogue))
    runtime = open_runtime(load_settings(runtime_env, database_url=database_url))
    opened = runtime.app.open_account("kills", OPERATOR, credits=10**9)
    token = runtime.app.create_key(opened.account.id, "k", Scope(), OPERATOR).token.value
    port = free_port()
    gateway_process = start_gateway(env, port, log_level="critical")
    background = start_background(env, stdout=subprocess.DEVNULL)
    successor: subprocess.Popen[bytes] | None = None
    try:
        wait_until_up(port, gateway_process)
        gateway = Gateway(f"http://127.0.0.1:{port}", runtime, token, opened.account.id)
        with httpx.Client(timeout=30) as client:  # both processes up and serving
            assert gateway.call(client, "fake/ok") == 200
        stop = threading.Event()
        cut_off: list[str] = []

        def client_loop(index: int) -> None:
            with httpx.Client(timeout=10) as client:
                while not stop.is_set():
                    try:
                        gateway.call(client, "fake/ok", stream=index % 2 == 0)
                    except httpx.HTTPError as error:
                        cut_off.append(type(error).__name__)  # the gateway died under it
                        return

        def answered_at_least(count: int) -> None:
            deadline = time.monotonic() + 60
            while len(gateway.told) < count:
                assert time.monotonic() < deadline, f"only {len(gateway.told)} answers"
                time.sleep(0.02)

        clients = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
        for thread in clients:
            thread.start()
        try:
            answered_at_least(4)
            background.send_signal(signal.SIGKILL)  # projections, reconciler, chain: gone
            answered_at_least(16)
            gateway_process.send_signal(signal.SIGKILL)  # with requests in flight
        finally:
            stop.set()
            for thread in clients:
                thread.join(20)
        assert cut_off, "the kill cut no request off"

        # A new background process takes over; it settles the dead gateway's holds once its
        # lease (1 s) has expired and they are older than the hold timeout (1 s).
        successor = start_background(env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            books = replay(runtime)
            if all(r in books.settled or books.released[r] for r in books.reserved):
                break
            assert time.monotonic() < deadline, "holds left open after the takeover"
            time.sleep(0.2)
        books = check_books(runtime, gateway.told, killed=True)
        unsettled = [e[0] for e in books.settled.values() if e[0].status == "unsettled"]
        assert unsettled and all(e.cost == e.held for e in unsettled)
    finally:
        for process in (gateway_process, background, successor):
            if process is not None and process.poll() is None:
                process.kill()
            if process is not None:
                process.wait()
        runtime.close()

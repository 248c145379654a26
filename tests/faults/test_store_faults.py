"""The store misbehaving: PostgreSQL going away under load (a TCP proxy the test stops and
restarts stands in for it; the shared server is never touched), a statement timeout on each
projection, and two writers on one SQLite file. After each, the books are checked from the raw
event log."""

import threading
import time
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from domain.scope import Scope
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from projections import all_projections
from tests.fake_upstream import FakeUpstream
from tests.support.faults import (
    OPERATOR,
    Load,
    proxied_postgres,
    running_gateway,
    wait_until_settled,
)
from tests.support.ledger_check import check_books
from tests.support.spend import usage
from tests.support.stores import PEPPER

pytestmark = pytest.mark.faults


def test_a_postgresql_outage_under_load_charges_every_answer_once_and_refuses_the_rest(
    postgres_url: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    with (
        proxied_postgres(postgres_url) as store,
        running_gateway(store.url, tmp_path, upstream) as gateway,
    ):
        with Load(gateway, clients=8) as load:
            time.sleep(1.0)
            store.proxy.stop()  # PostgreSQL is gone (every connection cut) …
            time.sleep(1.5)
            store.proxy.start()  # … and back, on the same address
            time.sleep(2.5)
        statuses = load.outcomes()
        assert set(statuses) <= {200, 503}, statuses  # answered, or told to retry
        assert statuses[200] > 10 and statuses[503] > 0, statuses
        wait_until_settled(gateway, timeout=20)
        check_books(gateway.runtime, gateway.told, refused=gateway.refused)


@pytest.mark.parametrize("name", [p.name for p in all_projections()])
def test_a_statement_timeout_on_any_projection_is_retried_not_recorded(
    sqlite_url: str, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=sqlite_url,
    )
    runtime = open_runtime(settings)
    try:
        runtime.app.access_barrier = lambda position: None
        account = runtime.app.open_account("projections", OPERATOR, credits=10**6).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR).key
        runtime.spend.admit(account.id, "r", key.id, "m", 100, None).result(10)
        runtime.spend.settle(account.id, "r", 50, usage()).result(10)
        projection = runtime.projections.projections[name]
        real = projection.apply
        cancelled: list[int] = []

        def times_out_once(conn: object, events: object) -> None:
            if not cancelled:
                cancelled.append(1)
                raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
            real(conn, events)  # type: ignore[arg-type]

        monkeypatch.setattr(projection, "apply", times_out_once)
        runtime.projections.catch_up()
        head = runtime.projections.head()
        assert all(s.position == head for s in runtime.projections.status())
        assert runtime.projections.recorded_failure(name) is None
        assert runtime.projections.failures == {}
        if projection.topics:  # a projection that reads nothing here never applied a batch
            assert cancelled == [1]
    finally:
        runtime.close()


def test_two_writers_on_one_sqlite_file_keep_the_books(sqlite_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)},
        database_url=sqlite_url,
    )
    first, second = open_runtime(settings), open_runtime(settings, prepare_schema=False)
    try:
        account = first.app.open_account("shared", OPERATOR, credits=10**6).account
        key = first.app.create_key(account.id, "k", Scope(), OPERATOR).key
        told: dict[str, int] = {}

        def hammer(runtime_index: int) -> None:
            spend = (first, second)[runtime_index].spend
            for n in range(40):
                request_id = f"w{runtime_index}-{n}-{uuid4().hex[:6]}"
                spend.admit(account.id, request_id, key.id, "m", 1000, None).result(30)
                told[request_id] = spend.settle(account.id, request_id, 7 + n, usage()).result(30)

        writers = [threading.Thread(target=hammer, args=(i,)) for i in (0, 1)]
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(120)
        assert len(told) == 80
        check_books(first, told)
        assert second.spend.view(account.id).result(10).balance == 10**6 - sum(told.values())
    finally:
        second.close()
        first.close()

"""What transaction-mode PgBouncer breaks, and how lowrouter does without it: consecutive
statements of one client may run on different server connections, so no server-side prepared
statement may outlive its transaction, and locks and leadership must not live in a session."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import psycopg
import pytest

from infrastructure.database import Database
from infrastructure.leadership import LeadershipLease, ensure_leadership_table
from infrastructure.persistence import PostgresPageLock
from projections.runner import STANDBY_INTERVAL
from tests.hosts.pgbouncer import PgBouncer

QUERY = "SELECT count(*) FROM pg_class WHERE relname = %s"
LEASE = 0.6  # seconds (the default LOWROUTER_LEADERSHIP_LEASE_SECONDS)


@pytest.fixture
def bounced_url(postgres_url: str, pgbouncers: dict[str, PgBouncer]) -> str:
    return pgbouncers["transaction"].url_for(postgres_url)


@pytest.fixture
def databases(bounced_url: str) -> Iterator[list[Database]]:
    """Two processes' pools, through transaction-mode PgBouncer."""
    made = [Database(bounced_url, pool_size=4, transaction_pooler=True) for _ in range(2)]
    yield made
    for database in made:
        database.close()


def hammer(database: Database, threads: int = 8, each: int = 60) -> list[str]:
    """The same statement from many threads at once (so PgBouncer shuffles server
    connections under the pool's connections); the errors met."""

    def run(_: int) -> list[str]:
        errors = []
        for _ in range(each):
            try:
                with database.connection() as conn:
                    conn.execute(QUERY, ["lr_keys"], prepare=True).fetchone()
            except psycopg.Error as error:
                errors.append(type(error).__name__)
        return errors

    with ThreadPoolExecutor(threads) as pool:
        return [e for errors in pool.map(run, range(threads)) for e in errors]


def test_prepared_statements_are_off_behind_transaction_pooling(bounced_url: str) -> None:
    """(With them on, the same hammering meets "prepared statement does not exist" on another
    server connection — but only when PgBouncer happens to shuffle them, so that is not
    asserted here.)"""
    unprepared = Database(bounced_url, pool_size=4, transaction_pooler=True)
    try:
        assert hammer(unprepared) == []
        with unprepared.connection() as conn:
            assert conn.prepare_threshold is None
    finally:
        unprepared.close()


def test_the_page_lock_excludes_across_processes_through_transaction_pooling(
    databases: list[Database],
) -> None:
    account = uuid4()
    inside, overlaps = [0], [0]
    guard = threading.Lock()

    def batch(database: Database) -> None:
        with PostgresPageLock(database)([account]):
            with guard:
                inside[0] += 1
                overlaps[0] = max(overlaps[0], inside[0])
            time.sleep(0.01)  # the batch's reads and save, on other connections
            with guard:
                inside[0] -= 1

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(batch, [databases[i % 2] for i in range(40)]))
    assert overlaps[0] == 1


def test_one_lease_holder_and_a_standby_takes_over_after_a_crash(
    databases: list[Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_leadership_table(databases[0])
    first, second = LeadershipLease(databases[0], LEASE), LeadershipLease(databases[1], LEASE)
    try:
        assert first() is True
        assert second() is False
        time.sleep(3 * LEASE)  # renewed by its own thread: still the holder
        assert second() is False and first() is True
        # The first process freezes (its renewals stop, as if its host vanished).
        monkeypatch.setattr(first, "_take", lambda: False)
        crashed = time.monotonic()
        while not second():  # a standby's tries, as the runner makes them
            assert time.monotonic() - crashed < LEASE + STANDBY_INTERVAL + 0.5
            time.sleep(STANDBY_INTERVAL)
        assert second.current_holder() == second.holder
        monkeypatch.undo()
        assert first() is False  # it noticed, and stands by
    finally:
        second.release()
        first.release()

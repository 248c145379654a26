"""A host that vanishes in the middle of a statement leaves no lock behind for long.

The many-hosts failover (test_many_hosts.py) stalled now and then through transaction-mode
PgBouncer: the vanished leader's projection batch kept its position row locked for good. The
idle-in-transaction timeouts (PostgreSQL's, PgBouncer's) do not end such a transaction: its
backend is *active*, waiting for the rest of a statement. Only noticing that the peer is gone
ends it — TCP keepalives on the socket facing the host (README, "Running on many hosts").
Here a client in a host takes a row lock, sends half a statement (half_statement.py), and its
host vanishes; the lock must be free again within the keepalive's bound.
"""

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from infrastructure.database import (
    IDLE_IN_TRANSACTION,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    Database,
)
from infrastructure.settings import postgres_conninfo, postgres_parts
from tests.hosts.network import KEEPALIVE_BOUND, forwarder, hosts
from tests.hosts.pgbouncer import running_pgbouncer
from tests.support.processes import free_port

CLIENT = Path(__file__).with_name("half_statement.py")
TABLE = "lr_vanish_probe"


@pytest.fixture
def probe(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres_conninfo(postgres_url), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {TABLE} VALUES (1)")
        yield conn


def row_locked(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        with conn.transaction():
            conn.execute(f"SELECT * FROM {TABLE} WHERE id = 1 FOR UPDATE NOWAIT")
        return False
    except psycopg.errors.LockNotAvailable:
        return True


def half_sent(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """The client's backend is waiting for the rest of its statement."""
    found = conn.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'half' AND state = 'active' AND wait_event = 'ClientRead'"
    ).fetchone()
    return found is not None


@pytest.mark.parametrize("route", ["direct", "pgbouncer-transaction"])
def test_a_lock_held_by_a_host_that_vanished_mid_statement_is_freed(
    route: str, postgres_url: str, probe: psycopg.Connection[tuple[object, ...]]
) -> None:
    pg = postgres_parts(postgres_url)
    with contextlib.ExitStack() as stack:
        [host] = stack.enter_context(hosts(1))
        if route == "direct":
            port = free_port()
            stack.enter_context(forwarder([host.gateway], (pg["host"], int(pg["port"])), port))
        else:
            port = stack.enter_context(running_pgbouncer("transaction", [host.gateway])).port
        env = {"PATH": os.environ["PATH"]}
        host.run([sys.executable, str(CLIENT), host.gateway, str(port), pg["dbname"], TABLE], env)
        deadline = time.monotonic() + 30
        while not (half_sent(probe) and row_locked(probe)):
            assert time.monotonic() < deadline, "the client did not get its lock"
            time.sleep(0.1)

        host.crash()
        vanished = time.monotonic()
        while row_locked(probe):
            assert time.monotonic() - vanished < KEEPALIVE_BOUND + 5, "the lock outlived its host"
            time.sleep(0.2)
        freed = time.monotonic() - vanished
    print(f"{route}: the vanished host's lock was freed {freed:.1f} s after")
    assert freed <= KEEPALIVE_BOUND


def test_lowrouter_asks_postgresql_to_probe_its_connections(postgres_url: str) -> None:
    """Straight to PostgreSQL, the backends facing lowrouter's hosts make the probes above
    (which the forwarder stands in for here): every pooled connection asks for them."""
    database = Database(postgres_url)
    try:
        with database.connection() as conn:
            found = conn.execute(
                "SELECT current_setting('tcp_keepalives_idle') AS idle, "
                "current_setting('tcp_keepalives_interval') AS interval, "
                "current_setting('tcp_keepalives_count') AS count, "
                "current_setting('idle_in_transaction_session_timeout') AS idle_in_transaction"
            ).fetchone()
    finally:
        database.close()
    assert found == {
        "idle": str(KEEPALIVE_IDLE),
        "interval": str(KEEPALIVE_INTERVAL),
        "count": str(KEEPALIVE_COUNT),
        "idle_in_transaction": IDLE_IN_TRANSACTION,
    }

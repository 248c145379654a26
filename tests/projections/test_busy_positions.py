"""A runner never queues behind another runner's open batch: a batch left open by a vanished
host holds its position row until the server cuts it off, and a runner queued behind it would
hold the row next, one more open batch to wait out (issue 20's stall after failover)."""

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from domain.actor import Actor
from infrastructure.chain.store import catch_up_chain, chain_position
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import load_settings, postgres_conninfo
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "test")
LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.fixture
def runtime(postgres_url: str, tmp_path: str) -> Iterator[Runtime]:
    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)}
    opened = open_runtime(load_settings(env, database_url=postgres_url))
    account = opened.app.open_account("busy", OPERATOR).account
    opened.spend.fund(account.id, 5, OPERATOR).result()
    yield opened
    opened.close()


@pytest.fixture
def open_batch(postgres_url: str) -> Iterator[psycopg.Connection]:
    """Another runner's batch: a transaction left open on the position rows it locked."""
    with psycopg.connect(postgres_conninfo(postgres_url)) as conn:
        yield conn


def hold(batch: psycopg.Connection, name: str) -> None:
    batch.execute("SELECT 1 FROM lr_projection_positions WHERE name = %s FOR UPDATE", [name])


def nobody_waits_on_a_lock(conn: psycopg.Connection, seconds: float) -> bool:
    """No session of this database is waiting on a lock, looked at for `seconds`."""
    deadline = time.monotonic() + seconds
    with psycopg.connect(conn.info.dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(LOCK_WAITERS).fetchone()
            if row is None or row[0]:
                return False
            time.sleep(0.02)
    return True


def test_the_background_cycle_skips_a_projection_whose_batch_another_runner_holds(
    runtime: Runtime, open_batch: psycopg.Connection
) -> None:
    hold(open_batch, "usage")
    started = time.monotonic()
    runtime.projections.catch_up(wait_for_busy=False)
    assert time.monotonic() - started < 2  # it did not wait for the open batch
    head = runtime.projections.head()
    positions = {s.name: s.position for s in runtime.projections.status()}
    assert positions.pop("usage") < head
    assert all(position == head for position in positions.values())  # the others moved on
    open_batch.rollback()
    runtime.projections.catch_up(["usage"], wait_for_busy=False)
    assert runtime.projections.position("usage") == head


def test_a_patient_catch_up_waits_for_an_open_batch_without_queueing_behind_it(
    runtime: Runtime, open_batch: psycopg.Connection
) -> None:
    hold(open_batch, "keys")
    hold(open_batch, "chain")
    done = threading.Event()

    def catch_up() -> None:
        runtime.projections.catch_up(["keys"])
        catch_up_chain(runtime)
        done.set()

    worker = threading.Thread(target=catch_up, daemon=True)
    worker.start()
    assert nobody_waits_on_a_lock(open_batch, 0.5)
    assert not done.is_set()  # it waits for the batch to end...
    open_batch.rollback()  # ...and goes on as soon as it does (here: rolled back)
    worker.join(timeout=10)
    head = runtime.projections.head()
    assert done.is_set() and runtime.projections.position("keys") == head
    assert chain_position(runtime.engine) == head

"""The ledger's PostgreSQL recorder writes exactly what eventsourcing's own recorder would: the
same rows, notification ids in commit order, the same conflict on a version already taken."""

from collections.abc import Iterator
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory

from infrastructure.event_store import LedgerFactory, LedgerRecorder
from infrastructure.persistence import eventsourcing_env


@pytest.fixture
def recorders(postgres_url: str) -> Iterator[tuple[LedgerRecorder, PostgresApplicationRecorder]]:
    env = {**eventsourcing_env(postgres_url), "CREATE_TABLE": "y"}
    ours = LedgerFactory(env)
    stock = PostgresFactory(env)
    ledger_recorder, stock_recorder = ours.application_recorder(), stock.application_recorder()
    assert isinstance(ledger_recorder, LedgerRecorder)
    ledger_recorder.create_table()
    yield ledger_recorder, stock_recorder  # type: ignore[misc]
    ours.close()
    stock.close()


def test_a_batch_is_stored_as_eventsourcing_stores_it(
    recorders: tuple[LedgerRecorder, PostgresApplicationRecorder],
) -> None:
    ours, stock = recorders
    a, b = uuid4(), uuid4()
    batch = [
        StoredEvent(a, 1, "domain.x:Created", b'{"n":1}'),
        StoredEvent(a, 2, "domain.x:Changed", b"\x00\xffbinary"),
        StoredEvent(b, 1, "domain.y:Created", b"{}"),
    ]
    first = ours.insert_events(batch)
    second = stock.insert_events([StoredEvent(b, 2, "domain.y:Changed", b"{}")])
    assert first is not None and second is not None
    assert list(first) == sorted(first) and second[0] > first[-1]
    assert list(stock.select_events(a)) == batch[:2]
    notifications = stock.select_notifications(start=1, limit=10)
    assert [(n.originator_id, n.originator_version) for n in notifications] == [
        (a, 1),
        (a, 2),
        (b, 1),
        (b, 2),
    ]
    assert [n.id for n in notifications[:3]] == list(first)


def test_a_version_already_taken_is_refused_and_nothing_of_the_batch_is_stored(
    recorders: tuple[LedgerRecorder, PostgresApplicationRecorder],
) -> None:
    ours, stock = recorders
    page = uuid4()
    ours.insert_events([StoredEvent(page, 1, "t", b"{}")])
    with pytest.raises(IntegrityError):
        ours.insert_events([StoredEvent(page, 2, "t", b"{}"), StoredEvent(page, 1, "t", b"{}")])
    assert [e.originator_version for e in stock.select_events(page)] == [1]


def test_a_database_without_the_function_is_written_as_eventsourcing_writes_it(
    recorders: tuple[LedgerRecorder, PostgresApplicationRecorder],
) -> None:
    """A worker that does not prepare the schema, on a database prepared by lowrouter 0.1."""
    ours, stock = recorders
    with ours.datastore.get_connection() as conn:
        conn.execute(f"DROP FUNCTION lowrouter_insert_{ours.events_table_name}")
    page = uuid4()
    ids = ours.insert_events([StoredEvent(page, 1, "t", b"{}"), StoredEvent(page, 2, "t", b"{}")])
    assert ids is not None and len(ids) == 2
    assert [e.originator_version for e in stock.select_events(page)] == [1, 2]
    with pytest.raises(IntegrityError):
        ours.insert_events([StoredEvent(page, 2, "t", b"{}")])

"""eventsourcing's PostgreSQL store, with the batch insert the ledger writer needs to be fast.

`PERSISTENCE_MODULE` points here for PostgreSQL (infrastructure.persistence). Everything is
eventsourcing's — the table, the EXCLUSIVE table lock that keeps notification ids in commit
order, the NOTIFY, the pipelined transaction — except how a batch of events travels: as four
arrays of scalars (uuid, bigint, text, bytea), which psycopg's C extension dumps, instead of one
array of a composite type, which it dumps value by value in Python (the largest part of the
writer's time under load; see README, Performance).
"""

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.insert_arrays_statement = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[]) "
            "RETURNING notification_id"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=SQL(self.datastore.originator_id_type),
        )
        self.notify_statement = SQL("NOTIFY {0}").format(Identifier(self.channel_name))

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        self._lock_table(curs)
        curs.execute(self.notify_statement)
        curs.execute(
            self.insert_arrays_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )


class LedgerFactory(PostgresFactory):
    application_recorder_class = LedgerRecorder

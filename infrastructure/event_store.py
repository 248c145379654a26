"""eventsourcing's PostgreSQL store, with the batch insert the ledger writer needs to be fast.

`PERSISTENCE_MODULE` points here for PostgreSQL (infrastructure.persistence). Everything is
eventsourcing's — the table, the notification ids, the NOTIFY that wakes projections — except
how a batch is inserted: one call of a PL/pgSQL function, created beside the table, that takes the
EXCLUSIVE table lock (so notification ids are issued in commit order, as eventsourcing's own
insert does), notifies, and inserts four arrays of scalars (uuid, bigint, text, bytea). That is
one statement and one round trip per batch instead of a pipelined transaction of five statements,
and arrays psycopg's C extension dumps instead of an array of a composite type it dumps value by
value in Python: together most of the ledger writer's time (see README, Performance).
eventsourcing's own database function (POSTGRES_ENABLE_DB_FUNCTIONS) does not lock the table, so
readers tailing the log could pass over an id that commits later; this one does.

The store does not keep a pool of its own: it borrows the process's one pool
(infrastructure.database), named by `SHARED_POOL` in its environment, or opens one it owns.
"""

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from eventsourcing.persistence import ProgrammingError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.utils import Environment
from psycopg.errors import UndefinedFunction
from psycopg.sql import SQL, Identifier

from infrastructure.database import Database

log = logging.getLogger("lowrouter.event_store")

SHARED_POOL = "LOWROUTER_SHARED_POOL"  # env: the id of the Database whose pool the store uses


class LedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self._function_missing = False
        function = Identifier(self.datastore.schema, f"lowrouter_insert_{self.events_table_name}")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {function}("
                "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
                "BEGIN "
                "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                "LOCK TABLE {table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "RETURN QUERY INSERT INTO {table} "
                "(originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) "
                "RETURNING notification_id; "
                "END; $BODY$"
            ).format(
                function=function,
                id_type=SQL(self.datastore.originator_id_type),
                lock_timeout=SQL(str(self.datastore.lock_timeout)),
                table=Identifier(self.datastore.schema, self.events_table_name),
                channel=Identifier(self.channel_name),
            )
        )
        self.insert_call = SQL(
            "SELECT * FROM {function}(%s::{id_type}[], %s::bigint[], %s::text[], %s::bytea[])"
        ).format(function=function, id_type=SQL(self.datastore.originator_id_type))

    # No retry here (eventsourcing retries its insert on OperationalError): if the connection
    # drops after the commit, a retry would meet its own events as a conflict and the writer
    # would apply the batch again — a funding twice. The writer fails the batch instead.
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        """Insert the batch atomically (one statement: its own transaction); its notification
        ids, in order. A version already taken raises eventsourcing's IntegrityError."""
        if not stored_events:
            return []
        if self._function_missing:
            return super().insert_events(stored_events, **kwargs) or []
        arrays = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.insert_call, arrays, prepare=True)
                return [next(iter(row.values())) for row in curs.fetchall()]  # dict rows
        except ProgrammingError as error:
            if not isinstance(error.__cause__, UndefinedFunction):
                raise
            # A database prepared by lowrouter 0.1 and a worker that does not prepare the
            # schema: eventsourcing's own insert until the schema is prepared again.
            log.warning("%s; inserting as eventsourcing does", error)
            self._function_missing = True
            return super().insert_events(stored_events, **kwargs) or []


class SharedPoolDatastore(PostgresDatastore):
    """eventsourcing's datastore on a pool it borrows: closing the store closes the pool only
    if the store opened it."""

    database: Database
    owns_database: bool

    def close(self) -> None:
        if getattr(self, "owns_database", False):
            self.database.close()


class LedgerFactory(PostgresFactory):
    application_recorder_class = LedgerRecorder

    def __init__(self, env: Environment) -> None:
        super().__init__(env)  # builds eventsourcing's datastore, whose own pool never opens
        built = self.datastore
        shared = Database.find(env.get(SHARED_POOL) or "")
        datastore = SharedPoolDatastore.__new__(SharedPoolDatastore)
        datastore.__dict__.update(built.__dict__)
        if shared is None:  # a ledger opened on its own (tools, tests)
            user, password = (
                quote(env.get(f"POSTGRES_{n}") or "", safe="") for n in ("USER", "PASSWORD")
            )
            url = f"postgresql://{user}:{password}@{env.get('POSTGRES_HOST')}:" + (
                f"{env.get('POSTGRES_PORT')}/{env.get('POSTGRES_DBNAME')}"
            )
            shared, datastore.owns_database = Database(url, application_name="lowrouter"), True
        else:
            datastore.owns_database = False
        # eventsourcing types its pool as its own psycopg_pool subclass, which only adds a
        # password callback; the datastore calls nothing on it but psycopg_pool's methods.
        datastore.database, datastore.pool = shared, shared.pool  # type: ignore[assignment]
        self.datastore = datastore

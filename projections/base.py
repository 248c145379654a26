"""A projection applies batches of events to its tables inside the runner's transaction."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import Connection, Table, insert

if TYPE_CHECKING:
    import psycopg


class Projection(Protocol):
    # Read-only members, so a projection may declare them as plain class attributes (tuples).
    @property
    def name(self) -> str: ...  # its tracking position's name

    @property
    def schema_version(self) -> int: ...  # bump to rebuild it from the log on the next start

    @property
    def tables(self) -> Sequence[Table]: ...

    @property
    def topics(self) -> Sequence[str]: ...  # the event topics it reads; others only advance it

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Apply (position, domain event) pairs, in order, within the open transaction."""
        ...


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows in the open transaction. On PostgreSQL as one statement over arrays
    (`INSERT … SELECT * FROM unnest(%s::type[], …)`, one array per column, as the event store
    inserts): psycopg's executemany sends one Bind/Execute per row and was the projections'
    largest cost (see README, Performance). Not COPY: a runner whose host vanished mid-COPY
    leaves its transaction *active*, waiting for data, for as long as the connection is not
    found dead (keepalives: infrastructure.database), holding its projection's position; one
    statement is such a window only while its own bytes are on the wire. SQLite keeps
    executemany. The connection's schema translation (an online rebuild's shadow schema)
    applies to both."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    from psycopg import sql

    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    name = sql.Identifier(schema, table.name) if schema else sql.Identifier(table.name)
    columns = list(rows[0])
    if any(len(row) != len(columns) for row in rows):  # a row's extra keys would be dropped
        raise ValueError(f"rows for {table.name} do not all have the same columns")
    types = [table.c[column].type.compile(dialect=conn.dialect) for column in columns]
    statement = sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
        name,
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.SQL("%s::" + kind + "[]") for kind in types),
    )
    arrays = [[row[column] for row in rows] for column in columns]
    # On the postgresql dialect the DBAPI connection is psycopg's (see persistence.py).
    driver = cast("psycopg.Connection[Any]", conn.connection.driver_connection)
    with driver.cursor() as cursor:
        cursor.execute(statement, arrays)

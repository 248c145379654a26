"""A projection applies batches of events to its tables inside the runner's transaction."""

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Table, insert


class Projection(Protocol):
    name: str  # its tracking position's name
    schema_version: int  # bump to rebuild it from the log on the next start
    tables: Sequence[Table]
    topics: Sequence[str]  # the event topics it reads; the others only advance its position

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Apply (position, domain event) pairs, in order, within the open transaction."""
        ...


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many rows in the open transaction. On PostgreSQL through COPY: psycopg's
    executemany sends one Bind/Execute per row and was the projections' largest cost (see
    README, Performance); SQLite keeps executemany. The connection's schema translation (an
    online rebuild's shadow schema) applies to both."""
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
    if any(len(row) != len(columns) for row in rows):  # COPY would drop a row's extra keys
        raise ValueError(f"rows for {table.name} do not all have the same columns")
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        name, sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    driver = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
        for row in rows:
            copy.write_row([row[column] for column in columns])

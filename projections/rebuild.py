"""Rebuilding a projection online: build it anew in shadow tables while the gateways keep
reading the live ones, then swap the contents in one short transaction.

The shadow is a schema of the same PostgreSQL database, or a SQLite file attached beside the
database. Every statement of the projection is pointed at it with SQLAlchemy's
schema_translate_map, so projections need no code of their own for it.
"""

import contextlib
import os
from collections.abc import Callable

from sqlalchemy import Connection, MetaData, Table, delete, insert, select, update

from projections.base import Projection
from projections.runner import BATCH_SIZE, ProjectionFailed, ProjectionRunner, now_us
from projections.schema import metadata, positions, projection_failures

SHADOW = "lr_rebuild"
Progress = Callable[[str, int, int], None]


def rebuild(runner: ProjectionRunner, name: str, progress: Progress | None = None) -> int:
    """Drop and rebuild one projection from the log without taking its tables away from
    readers. Returns how many events were applied."""
    projection = runner.projections[name]
    shadow_path = _shadow_file(runner)
    shadow_engine = runner.engine.execution_options(schema_translate_map={None: SHADOW})
    with runner.engine.connect() as live, shadow_engine.connect() as shadow:
        _attach(live, shadow_path)
        _attach(shadow, shadow_path)
        try:
            with shadow.begin():
                metadata.drop_all(shadow, tables=list(projection.tables))
                metadata.create_all(shadow, tables=list(projection.tables))
            type(projection).__init__(projection)  # forget any in-memory memo
            position, applied = 0, 0
            while runner.head() - position > BATCH_SIZE:  # the bulk, without blocking anyone
                with shadow.begin():
                    position, count = _apply(runner, projection, shadow, position, runner.head())
                applied += count
                if progress is not None:
                    progress(name, position, runner.head())
            with live.begin():  # the swap: the live tables change in one short transaction
                live.execute(  # taking the position row first makes other runners wait
                    update(positions).where(positions.c.name == name).values(updated_us=now_us())
                )
                head = runner.head()
                with shadow.begin():
                    while position < head:
                        position, count = _apply(runner, projection, shadow, position, head)
                        applied += count
                _copy_shadow_into_live(live, projection)
                live.execute(projection_failures.delete().where(projection_failures.c.name == name))
                live.execute(
                    update(positions)
                    .where(positions.c.name == name)
                    .values(
                        position=head,
                        schema_version=projection.schema_version,
                        updated_us=now_us(),
                    )
                )
            if progress is not None:
                progress(name, position, position)
            with shadow.begin():
                metadata.drop_all(shadow, tables=list(projection.tables))
        finally:
            _detach(shadow, shadow_path)
            _detach(live, shadow_path)
    return applied


def _apply(
    runner: ProjectionRunner, projection: Projection, conn: Connection, start: int, stop: int
) -> tuple[int, int]:
    end, events = runner.read_batch(projection, start, stop)
    try:
        projection.apply(conn, events)
    except Exception as error:
        position = runner.first_position(events, end)
        raise ProjectionFailed(projection.name, position, error) from error
    return end, len(events)


def _copy_shadow_into_live(conn: Connection, projection: Projection) -> None:
    copies = MetaData()
    for table in projection.tables:
        shadow_table: Table = table.to_metadata(copies, schema=SHADOW)
        conn.execute(delete(table))
        conn.execute(insert(table).from_select(list(table.c.keys()), select(shadow_table)))


def _shadow_file(runner: ProjectionRunner) -> str | None:
    database = runner.engine.url.database
    if runner.engine.dialect.name == "sqlite" and database:
        return f"{database}.rebuild"
    return None


def _attach(conn: Connection, shadow_path: str | None) -> None:
    if shadow_path is None:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SHADOW}")
    else:
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {SHADOW}", (shadow_path,))
    conn.commit()


def _detach(conn: Connection, shadow_path: str | None) -> None:
    if conn.in_transaction():
        conn.rollback()
    if shadow_path is None:
        conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
        conn.commit()
        return
    conn.exec_driver_sql(f"DETACH DATABASE {SHADOW}")
    conn.commit()
    if os.path.exists(shadow_path):  # the other connection may still have it attached
        _remove_shadow_file(shadow_path)


def _remove_shadow_file(shadow_path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(shadow_path + suffix)

"""The chain in the database: the lr_chain table, catching it up with the log, verifying the
log against it, and checkpoints kept outside it. The encoding itself is chain/encoding.py.

`lr_chain` keeps one row per chained event (a Link): its position, identity and digest.

Why not a Projection run by ProjectionRunner: the runner hands projections decoded events, and
the chain needs the stored bytes; and the runner rebuilds a projection from the current log when
asked (`reset`, a schema version bump), which for this table would launder any tampering into a
fresh chain. So the chain has its own catch-up, `catch_up_chain`, with the runner's discipline:
batches, one transaction each, claimed by compare-and-set on its row ("chain") in
lr_projection_positions, so any number of processes can run it at once. It only ever appends; it
never rewrites a chained position.

It reads the event table's rows directly (SQLAlchemy, the same engine as the projections) rather
than through the recorder: the recorder converts what it reads (an originator id into a UUID),
and a row tampered into a shape the recorder cannot convert would stop verification with an
error instead of being named. Read raw, such a row is reported as altered at its position.

What the chain proves: `verify` compares the log with lr_chain, which lives in the same database,
so someone able to rewrite both can make `verify` pass. A checkpoint (the head position and
digest, kept by the auditor outside the database) closes that gap: `verify_against` recomputes
the chain from the stored events alone and compares it with the checkpoint. A checkpoint proves
the PREFIX of the log up to its position; events appended later (legitimately or not) are covered
by the next checkpoint. Snapshots are not covered: they are a cache of state derived from events,
and an audit replays events.
"""

import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import Application
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    Text,
    column,
    func,
    insert,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.expression import TableClause

from infrastructure.chain.encoding import (
    ENCODING_VERSION,
    GENESIS,
    ChainError,
    Checkpoint,
    Difference,
    Identity,
    Link,
    RawRow,
    StoredEvent,
    VerifyReport,
    chain_links,
    first_difference,
    recompute_digest,
    well_formed_prefix,
)
from projections.runner import BUSY_RETRY, claim_position, now_us
from projections.schema import metadata, positions

NAME = "chain"  # its row in lr_projection_positions (its schema_version: the ENCODING_VERSION)
BATCH_SIZE = 2000
_SCHEMA_LOCK = 0x6C725F636861696E  # "lr_chain": serialises creating the table on PostgreSQL

chain = Table(
    "lr_chain",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("originator_id", Text, nullable=False),
    Column("originator_version", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # hex
)


class Store(Protocol):
    """What the chain needs of a Runtime: the event store and the database's engine."""

    @property
    def app(self) -> Application[UUID]: ...

    @property
    def engine(self) -> Engine: ...


# Reading the log and the chain, in batches ------------------------------------------------------


def _event_table(store: Store) -> tuple[TableClause, ColumnElement[int]]:
    """eventsourcing's table, and its notification id: SQLite's rowid, or PostgreSQL's
    notification_id column."""
    recorder: Any = store.app.recorder  # SQLite's or PostgreSQL's: neither type names both
    postgres = store.engine.dialect.name == "postgresql"
    position_name = "notification_id" if postgres else "rowid"
    events = table(
        recorder.events_table_name,
        column(position_name),
        column("originator_id"),
        column("originator_version"),
        column("topic"),
        column("state"),
        schema=recorder.datastore.schema if postgres else None,
    )
    return events, events.c[position_name]


def _read_rows(store: Store, start: int, stop: int, limit: int) -> Sequence[RawRow]:
    """Raw rows at positions start..stop (inclusive), in order, at most `limit`."""
    events, position = _event_table(store)
    query = (
        select(
            position,
            events.c.originator_id,
            events.c.originator_version,
            events.c.topic,
            events.c.state,
        )
        .where(position >= start, position <= stop)
        .order_by(position)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return conn.execute(query).all()


def _stored_rows(store: Store, stop: int) -> Iterator[RawRow]:
    """Every raw row up to `stop`, in notification order."""
    start = 1
    while start <= stop:
        rows = _read_rows(store, start, stop, BATCH_SIZE)
        yield from rows
        if len(rows) < BATCH_SIZE:
            return
        start = rows[-1][0] + 1


def log_head(store: Store) -> int:
    _, position = _event_table(store)
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.max(position))).scalar() or 0)


def _links(engine: Engine, stop: int) -> Iterator[Link]:
    """Every lr_chain row up to `stop`, in position order."""
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(chain)
                .where(chain.c.position > after, chain.c.position <= stop)
                .order_by(chain.c.position)
                .limit(BATCH_SIZE)
            ).all()
        yield from (Link(*row) for row in rows)
        if len(rows) < BATCH_SIZE:
            return
        after = rows[-1].position


def chain_head(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(chain.c.position))).scalar() or 0)


def _chained_position(engine: Engine, identity: Identity) -> int | None:
    """Where the chain recorded this event (one scan; only asked at a difference)."""
    originator_id, version = identity
    with engine.connect() as conn:
        found = conn.execute(
            select(chain.c.position).where(
                chain.c.originator_id == originator_id,
                chain.c.originator_version == version,
            )
        ).scalar()
    return None if found is None else int(found)


# Catching up ------------------------------------------------------------------------------------


def ensure_chain_schema(engine: Engine) -> None:
    """Create lr_chain and its position row if missing; refuse a chain of another encoding.
    Safe to run from several processes at once (PostgreSQL's CREATE TABLE IF NOT EXISTS is not,
    on its own: concurrent ones collide in pg_type, so they take turns on an advisory lock)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        for created in (positions, chain):
            conn.execute(CreateTable(created, if_not_exists=True))
        conn.execute(
            _insert_if_absent(conn, positions).values(
                name=NAME, position=0, updated_us=now_us(), schema_version=ENCODING_VERSION
            )
        )
        version = conn.execute(
            select(positions.c.schema_version).where(positions.c.name == NAME)
        ).scalar_one()
    if version != ENCODING_VERSION:
        raise ChainError(
            f"lr_chain uses encoding {version}, this code {ENCODING_VERSION}; it is never "
            "rebuilt automatically (that would re-chain a tampered log)"
        )


def _insert_if_absent(conn: Connection, into: Table) -> Any:
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(into).on_conflict_do_nothing()


def catch_up_chain(store: Store, until: int | None = None) -> int:
    """Chain every stored event up to the head (or `until`). Returns how many were chained.
    Stops with Malformed at a row the event store could not have written (chaining the events
    before it): it never vouches for such a row."""
    ensure_chain_schema(store.engine)
    chained = 0
    while True:
        done, count = _chain_next_batch(store, until)
        chained += count
        if done:
            return chained
        if not count:  # another process is chaining this batch: look again shortly
            time.sleep(BUSY_RETRY)


def chain_position(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(positions.c.position).where(positions.c.name == NAME)).scalar_one()
        )


def _chain_next_batch(store: Store, until: int | None) -> tuple[bool, int]:
    start = chain_position(store.engine)
    head = log_head(store)
    stop = head if until is None else min(head, until)
    if start >= stop:
        return True, 0
    rows = _read_rows(store, start + 1, stop, BATCH_SIZE)
    batch, malformed = well_formed_prefix(rows)
    if batch and not _claim_and_chain(store.engine, start, batch):
        return False, 0  # another process chained this batch first
    if malformed is not None:
        raise malformed
    return len(rows) < BATCH_SIZE, len(batch)


def _claim_and_chain(engine: Engine, start: int, batch: Sequence[StoredEvent]) -> bool:
    """Chain the batch after `start`, if the chain's position is still `start`."""
    with engine.begin() as conn:
        if not claim_position(conn, NAME, start, batch[-1].position):
            conn.rollback()
            return False
        links = chain_links(_digest_at(conn, start), batch)
        conn.execute(insert(chain), [asdict(link) for link in links])
    return True


def _digest_at(conn: Connection, position: int) -> bytes:
    if position == 0:
        return GENESIS
    digest = conn.execute(select(chain.c.digest).where(chain.c.position == position)).scalar()
    if digest is None:
        raise ChainError(f"lr_chain has lost its head row at position {position}")
    return bytes.fromhex(digest)


# Verifying against the chain --------------------------------------------------------------------


def verify(store: Store) -> VerifyReport:
    """Recompute the chain from the stored events and compare it with lr_chain, up to the
    chain's head. Events appended after the head are not chained yet and not judged."""
    ensure_chain_schema(store.engine)
    head = chain_head(store.engine)
    difference, checked = _first_difference(store, head)
    if difference is not None:
        return VerifyReport(difference.kind, difference.position, difference.message, checked, head)
    unchained = max(0, log_head(store) - head)
    message = f"clean: {checked} events verified through position {head}"
    if unchained:
        message += f" ({unchained} later positions not chained yet)"
    return VerifyReport("clean", None, message, checked, head)


def _first_difference(store: Store, stop: int) -> tuple[Difference | None, int]:
    engine = store.engine
    return first_difference(
        _stored_rows(store, stop),
        _links(engine, stop),
        lambda identity: _chained_position(engine, identity),
    )


# Checkpoints ------------------------------------------------------------------------------------


def write_checkpoint(store: Store, path: str | os.PathLike[str]) -> Checkpoint:
    """Catch up, check the whole chain, and write its head to `path` (JSON) for the auditor to
    keep outside the database. Refuses (ChainError) if the log fails `verify`."""
    catch_up_chain(store)
    report = verify(store)
    if not report.ok:
        raise ChainError(
            f"not writing a checkpoint of a log that fails verification: {report.message}"
        )
    with store.engine.connect() as conn:
        digest = _digest_at(conn, report.chained).hex()
    checkpoint = Checkpoint(report.chained, digest, datetime.now(UTC))
    _write_atomically(Path(path), json.dumps(checkpoint.to_json(), indent=2) + "\n")
    return checkpoint


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ChainError(f"cannot read the checkpoint {path}: {error}") from error
    if not isinstance(data, dict):
        raise ChainError(f"not a chain checkpoint: {path}")
    return Checkpoint.from_json(data)


def _write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def verify_against(store: Store, path: str | os.PathLike[str]) -> VerifyReport:
    """Prove the log up to the checkpoint's position is unchanged, by recomputing the chain from
    the stored events only. lr_chain, in the same database, is not trusted for the proof; it is
    only used to name the first position that differs."""
    checkpoint = read_checkpoint(path)
    digest, count = recompute_digest(_stored_rows(store, checkpoint.position))
    if digest is not None and digest.hex() == checkpoint.digest:
        return VerifyReport(
            "clean",
            None,
            f"clean: the log through position {checkpoint.position} ({count} events) matches "
            f"the checkpoint written at {checkpoint.written_at.isoformat()}",
            count,
            checkpoint.position,
        )
    ensure_chain_schema(store.engine)
    difference, checked = _first_difference(store, checkpoint.position)
    if difference is not None:
        message = f"{difference.message}; the log no longer matches the checkpoint"
        return VerifyReport(
            difference.kind, difference.position, message, checked, checkpoint.position
        )
    return VerifyReport(
        "differs",
        None,
        f"differs: the log through position {checkpoint.position} does not match the "
        "checkpoint (lr_chain was rewritten to match the log, or the checkpoint is from another "
        "log), so the first difference cannot be located",
        count,
        checkpoint.position,
    )

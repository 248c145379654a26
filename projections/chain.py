"""Tamper evidence: a hash chain over the stored event log, and checkpoints kept outside it.

For each stored event, in notification order:

    digest_n = SHA-256(digest_{n-1} ‖ position ‖ originator_id ‖ originator_version ‖ topic ‖ state)

with digest_0 (genesis) = 32 zero bytes. Every field has an unambiguous encoding: integers are
8-byte big-endian (signed), and text and bytes are an 8-byte big-endian length followed by the
bytes (text as UTF-8; an originator id as its canonical text, a UUID's hyphenated lowercase form,
so SQLite's hex column and PostgreSQL's uuid column give the same digest). The chain covers the
bytes as STORED, not the decoded event, so any change to a stored row shows, however harmless to
the decoder.

`lr_chain` keeps one row per chained event: its position, identity (originator id and version)
and digest. The identity is what tells a reordering (an event found at another position than
the one it was chained at) from an alteration.

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

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from uuid import UUID

from eventsourcing.application import Application
from sqlalchemy import (
    BigInteger,
    Column,
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

from projections.runner import BUSY_RETRY, claim_position, now_us
from projections.schema import metadata, positions

NAME = "chain"  # its row in lr_projection_positions
SCHEMA_VERSION = 1  # the encoding above; a chain of another encoding is never rebuilt silently
BATCH_SIZE = 2000
GENESIS = bytes(32)
CHECKPOINT_FORMAT = "lowrouter-chain-sha256-v1"
_SCHEMA_LOCK = 0x6C725F636861696E  # "lr_chain": serialises creating the table on PostgreSQL

chain = Table(
    "lr_chain",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("originator_id", Text, nullable=False),
    Column("originator_version", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # hex
)

Kind = Literal["clean", "altered", "removed", "inserted", "reordered", "differs"]


class ChainError(RuntimeError):
    """The chain cannot be extended or checked (an unknown encoding, a lost head row)."""


class Malformed(ChainError):
    """A stored row no event store could have written (a state that is not bytes, say)."""

    def __init__(self, position: int, reason: str) -> None:
        self.position, self.reason = position, reason
        super().__init__(f"the stored event at position {position} is malformed: {reason}")


class Store(Protocol):
    """What the chain needs of a Runtime: the event store and the database's engine."""

    @property
    def ledger(self) -> Application[UUID]: ...

    @property
    def engine(self) -> Engine: ...


@dataclass(frozen=True)
class VerifyReport:
    kind: Kind
    position: int | None  # the first position that differs; None when clean (or unlocated)
    message: str  # one line, naming the position
    checked: int  # events that matched
    chained: int  # the position checked up to (the chain's head, or the checkpoint's position)

    @property
    def ok(self) -> bool:
        return self.kind == "clean"


@dataclass(frozen=True)
class Checkpoint:
    position: int
    digest: str  # hex
    written_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "digest": self.digest,
            "written_at": self.written_at.isoformat(),
            "format": CHECKPOINT_FORMAT,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Checkpoint":
        if data.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
            raise ChainError(f"unknown checkpoint format {data.get('format')!r}")
        try:
            return cls(
                position=int(data["position"]),
                digest=str(data["digest"]),
                written_at=datetime.fromisoformat(str(data["written_at"])),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ChainError(f"not a chain checkpoint: {error}") from error


# The encoding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    """One row of the event table, in the chain's canonical form."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes

    @property
    def identity(self) -> tuple[str, int]:
        return self.originator_id, self.originator_version


def _integer(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def _field(data: bytes) -> bytes:
    return _integer(len(data)) + data


def link_digest(
    previous: bytes,
    position: int,
    originator_id: str,
    originator_version: int,
    topic: str,
    state: bytes,
) -> bytes:
    """The digest of one stored event, chained to the previous digest."""
    if len(previous) != 32:
        raise ValueError("the previous digest must be 32 bytes")
    hasher = hashlib.sha256(previous)
    hasher.update(_integer(position))
    hasher.update(_field(originator_id.encode()))
    hasher.update(_integer(originator_version))
    hasher.update(_field(topic.encode()))
    hasher.update(_field(state))
    return hasher.digest()


def event_digest(previous: bytes, event: StoredEvent) -> bytes:
    return link_digest(
        previous,
        event.position,
        event.originator_id,
        event.originator_version,
        event.topic,
        event.state,
    )


def canonical_originator_id(value: object) -> str | None:
    """A UUID's hyphenated form (SQLite stores hex, PostgreSQL a uuid); other text as it is."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(UUID(value))
        except ValueError:
            return value
    return None


def stored_event(row: Sequence[Any]) -> StoredEvent:
    """A raw row as the chain sees it; Malformed if the store could not have written it
    (SQLite keeps whatever type is written into a column)."""
    position, originator_id, version, topic, state = row
    canonical_id = canonical_originator_id(originator_id)
    if canonical_id is None:
        raise Malformed(position, f"its originator id is a {type(originator_id).__name__}")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Malformed(position, f"its version is a {type(version).__name__}")
    if not isinstance(topic, str):
        raise Malformed(position, f"its topic is a {type(topic).__name__}")
    if not isinstance(state, bytes | bytearray | memoryview):
        raise Malformed(position, f"its state is a {type(state).__name__}, not bytes")
    return StoredEvent(position, canonical_id, version, topic, bytes(state))


# Reading the log and the chain, in batches ------------------------------------------------------


def _event_table(store: Store) -> tuple[TableClause, Any]:
    """eventsourcing's table, and its notification id: SQLite's rowid, or PostgreSQL's
    notification_id column."""
    recorder: Any = store.ledger.recorder
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


def _read_rows(store: Store, start: int, stop: int, limit: int) -> Sequence[Sequence[Any]]:
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


def _stored_rows(store: Store, stop: int) -> Iterator[Sequence[Any]]:
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


@dataclass(frozen=True)
class Link:
    position: int
    originator_id: str
    originator_version: int
    digest: str

    @property
    def identity(self) -> tuple[str, int]:
        return self.originator_id, self.originator_version


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


def _chained_position(engine: Engine, identity: tuple[str, int]) -> int | None:
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
                name=NAME, position=0, updated_us=now_us(), schema_version=SCHEMA_VERSION
            )
        )
        version = conn.execute(
            select(positions.c.schema_version).where(positions.c.name == NAME)
        ).scalar_one()
    if version != SCHEMA_VERSION:
        raise ChainError(
            f"lr_chain uses encoding {version}, this code {SCHEMA_VERSION}; it is never "
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
    batch, malformed = _well_formed_prefix(rows)
    if batch and not _claim_and_chain(store.engine, start, batch):
        return False, 0  # another process chained this batch first
    if malformed is not None:
        raise malformed
    return len(rows) < BATCH_SIZE, len(batch)


def _well_formed_prefix(
    rows: Sequence[Sequence[Any]],
) -> tuple[list[StoredEvent], Malformed | None]:
    events = []
    for row in rows:
        try:
            events.append(stored_event(row))
        except Malformed as malformed:
            return events, malformed
    return events, None


def _claim_and_chain(engine: Engine, start: int, batch: Sequence[StoredEvent]) -> bool:
    """Chain the batch after `start`, if the chain's position is still `start`."""
    with engine.begin() as conn:
        if not claim_position(conn, NAME, start, batch[-1].position):
            conn.rollback()
            return False
        conn.execute(insert(chain), _new_links(_digest_at(conn, start), batch))
    return True


def _digest_at(conn: Connection, position: int) -> bytes:
    if position == 0:
        return GENESIS
    digest = conn.execute(select(chain.c.digest).where(chain.c.position == position)).scalar()
    if digest is None:
        raise ChainError(f"lr_chain has lost its head row at position {position}")
    return bytes.fromhex(digest)


def _new_links(previous: bytes, batch: Sequence[StoredEvent]) -> list[dict[str, Any]]:
    links = []
    for event in batch:
        previous = event_digest(previous, event)
        links.append(
            {
                "position": event.position,
                "originator_id": event.originator_id,
                "originator_version": event.originator_version,
                "digest": previous.hex(),
            }
        )
    return links


# Verifying against the chain --------------------------------------------------------------------


@dataclass(frozen=True)
class _Difference:
    kind: Kind
    position: int
    message: str


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


def _first_difference(store: Store, stop: int) -> tuple[_Difference | None, int]:
    """Walk the log and the chain side by side up to `stop`: the first difference, if any, and
    how many events matched before it."""
    rows, links = _stored_rows(store, stop), _links(store.engine, stop)
    row, link = next(rows, None), next(links, None)
    digest, checked = GENESIS, 0
    while row is not None or link is not None:
        if row is not None and (link is None or row[0] < link.position):
            return _inserted(row[0]), checked
        if link is not None and (row is None or link.position < row[0]):
            return _removed(link.position), checked
        assert row is not None and link is not None  # the same position in both
        try:
            event = stored_event(row)
        except Malformed as malformed:
            return _altered(malformed.position, malformed.reason), checked
        if event.identity != link.identity:
            return _moved_or_altered(store.engine, event), checked
        digest = event_digest(digest, event)
        if digest.hex() != link.digest:
            return _altered(event.position), checked
        checked += 1
        row, link = next(rows, None), next(links, None)
    return None, checked


def _inserted(position: int) -> _Difference:
    return _Difference(
        "inserted",
        position,
        f"inserted: position {position} is in the log but was never chained "
        "(a chained event follows it)",
    )


def _removed(position: int) -> _Difference:
    return _Difference(
        "removed", position, f"removed: position {position} was chained but is gone from the log"
    )


def _altered(position: int, reason: str = "") -> _Difference:
    why = f" ({reason})" if reason else ""
    return _Difference(
        "altered",
        position,
        f"altered: the stored event at position {position} differs from the one chained there"
        + why,
    )


def _moved_or_altered(engine: Engine, event: StoredEvent) -> _Difference:
    chained_at = _chained_position(engine, event.identity)
    if chained_at is None or chained_at == event.position:
        return _altered(event.position)
    originator_id, version = event.identity
    return _Difference(
        "reordered",
        event.position,
        f"reordered: position {event.position} holds the event chained at position "
        f"{chained_at} ({originator_id} v{version})",
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


def recompute_digest(store: Store, stop: int) -> tuple[bytes | None, int]:
    """The chain's digest at `stop` from the stored events alone, and how many events it
    covers; None if a row is malformed (no chain could match it)."""
    digest, count = GENESIS, 0
    for row in _stored_rows(store, stop):
        try:
            digest = event_digest(digest, stored_event(row))
        except Malformed:
            return None, count
        count += 1
    return digest, count


def verify_against(store: Store, path: str | os.PathLike[str]) -> VerifyReport:
    """Prove the log up to the checkpoint's position is unchanged, by recomputing the chain from
    the stored events only. lr_chain, in the same database, is not trusted for the proof; it is
    only used to name the first position that differs."""
    checkpoint = read_checkpoint(path)
    digest, count = recompute_digest(store, checkpoint.position)
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

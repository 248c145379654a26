"""The chain's encoding, pure (no database, no files): what store.py computes and compares.

For each stored event, in notification order:

    digest_n = SHA-256(digest_{n-1} ‖ position ‖ originator_id ‖ originator_version ‖ topic ‖ state)

with digest_0 (genesis) = 32 zero bytes. Every field has an unambiguous encoding: integers are
8-byte big-endian (signed), and text and bytes are an 8-byte big-endian length followed by the
bytes (text as UTF-8; an originator id as its canonical text, a UUID's hyphenated lowercase form,
so SQLite's hex column and PostgreSQL's uuid column give the same digest). The chain covers the
bytes as STORED, not the decoded event, so any change to a stored row shows, however harmless to
the decoder.

A link (one lr_chain row) keeps an event's position, identity (originator id and version) and
digest. The identity is what tells a reordering (an event found at another position than the one
it was chained at) from an alteration.
"""

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

ENCODING_VERSION = 1  # the encoding above; a chain of another encoding is never rebuilt silently
GENESIS = bytes(32)
CHECKPOINT_FORMAT = "lowrouter-chain-sha256-v1"

Kind = Literal["clean", "altered", "removed", "inserted", "reordered", "differs"]
# A row of the event table as read, unconverted: (position, originator_id, originator_version,
# topic, state). Any: SQLite keeps whatever type was written into a column.
RawRow = Sequence[Any]
Identity = tuple[str, int]  # (originator id, originator version)


class ChainError(RuntimeError):
    """The chain cannot be extended or checked (an unknown encoding, a lost head row)."""


class Malformed(ChainError):
    """A stored row no event store could have written (a state that is not bytes, say)."""

    def __init__(self, position: int, reason: str) -> None:
        self.position, self.reason = position, reason
        super().__init__(f"the stored event at position {position} is malformed: {reason}")


@dataclass(frozen=True)
class StoredEvent:
    """One row of the event table, in the chain's canonical form."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes

    @property
    def identity(self) -> Identity:
        return self.originator_id, self.originator_version


@dataclass(frozen=True)
class Link:
    """One chained event: where it was chained, what it was, and the digest up to it (hex)."""

    position: int
    originator_id: str
    originator_version: int
    digest: str

    @property
    def identity(self) -> Identity:
        return self.originator_id, self.originator_version


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


# The digest -------------------------------------------------------------------------------------


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


# Reading a raw row ------------------------------------------------------------------------------


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


def stored_event(row: RawRow) -> StoredEvent:
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


def well_formed_prefix(rows: Iterable[RawRow]) -> tuple[list[StoredEvent], Malformed | None]:
    """The rows up to the first malformed one, and that one's error (None if all are well
    formed): the chain never vouches for a row the store could not have written."""
    events = []
    for row in rows:
        try:
            events.append(stored_event(row))
        except Malformed as malformed:
            return events, malformed
    return events, None


# Chaining and checking a sequence ---------------------------------------------------------------


def chain_links(previous: bytes, events: Iterable[StoredEvent]) -> list[Link]:
    """The links of `events`, chained after the digest `previous`."""
    links = []
    for event in events:
        previous = event_digest(previous, event)
        link = Link(event.position, event.originator_id, event.originator_version, previous.hex())
        links.append(link)
    return links


def recompute_digest(rows: Iterable[RawRow]) -> tuple[bytes | None, int]:
    """The chain's digest after `rows` (from genesis), and how many events it covers; None if a
    row is malformed (no chain could match it)."""
    digest, count = GENESIS, 0
    for row in rows:
        try:
            digest = event_digest(digest, stored_event(row))
        except Malformed:
            return None, count
        count += 1
    return digest, count


@dataclass(frozen=True)
class Difference:
    kind: Kind
    position: int
    message: str


def first_difference(
    rows: Iterable[RawRow],
    links: Iterable[Link],
    chained_at: Callable[[Identity], int | None],
) -> tuple[Difference | None, int]:
    """Walk the log's rows and the chain's links side by side (both in position order, from
    genesis): the first difference, if any, and how many events matched before it.
    `chained_at` says where the chain recorded an event (asked only at a difference, to tell a
    reordering from an alteration)."""
    row_iter: Iterator[RawRow] = iter(rows)
    link_iter: Iterator[Link] = iter(links)
    row, link = next(row_iter, None), next(link_iter, None)
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
            return _moved_or_altered(event, chained_at(event.identity)), checked
        digest = event_digest(digest, event)
        if digest.hex() != link.digest:
            return _altered(event.position), checked
        checked += 1
        row, link = next(row_iter, None), next(link_iter, None)
    return None, checked


def _inserted(position: int) -> Difference:
    return Difference(
        "inserted",
        position,
        f"inserted: position {position} is in the log but was never chained "
        "(a chained event follows it)",
    )


def _removed(position: int) -> Difference:
    return Difference(
        "removed", position, f"removed: position {position} was chained but is gone from the log"
    )


def _altered(position: int, reason: str = "") -> Difference:
    why = f" ({reason})" if reason else ""
    return Difference(
        "altered",
        position,
        f"altered: the stored event at position {position} differs from the one chained there"
        + why,
    )


def _moved_or_altered(event: StoredEvent, chained_at: int | None) -> Difference:
    if chained_at is None or chained_at == event.position:
        return _altered(event.position)
    originator_id, version = event.identity
    return Difference(
        "reordered",
        event.position,
        f"reordered: position {event.position} holds the event chained at position "
        f"{chained_at} ({originator_id} v{version})",
    )

"""The tamper-evidence chain's encoding on its own, no database: the digest an auditor can
reimplement, the canonical form of a raw row, and checking a sequence of stored events against a
sequence of links (tests/audit/test_verify.py does the same on real stores, tampered with SQL)."""

import hashlib
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from infrastructure.chain.encoding import (
    GENESIS,
    ChainError,
    Checkpoint,
    Identity,
    Link,
    Malformed,
    canonical_originator_id,
    chain_links,
    first_difference,
    link_digest,
    recompute_digest,
    stored_event,
    well_formed_prefix,
)

KEY = UUID("0b7e3a52-6d7c-4c39-9a36-3f1f1c9d2b11")
PAGE = UUID("5f0c1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b")


def rows() -> list[list[Any]]:
    """Five stored rows as a store reads them: SQLite's hex ids and PostgreSQL's UUIDs mixed."""
    return [
        [1, KEY.hex, 1, "domain.keys:ApiKey.Created", b'{"name":"ci"}'],
        [2, PAGE, 1, "domain.ledger:LedgerPage.Opened", b'{"day":"2031-03-14"}'],
        [3, PAGE, 2, "domain.ledger:LedgerPage.Funded", b'{"amount":1000}'],
        [5, PAGE, 3, "domain.ledger:LedgerPage.Reserved", memoryview(b'{"amount":40}')],
        [6, KEY, 2, "domain.keys:ApiKey.Revoked", bytearray(b'{"reason":"leak"}')],
    ]


def links_of(stored: Sequence[Sequence[Any]]) -> list[Link]:
    events, malformed = well_formed_prefix(stored)
    assert malformed is None
    return chain_links(GENESIS, events)


def nowhere(identity: Identity) -> int | None:
    return None


def test_the_digest_is_sha256_over_length_prefixed_fields() -> None:
    # The format an auditor can reimplement: previous digest, then position, originator id,
    # version, topic and state; integers 8-byte big-endian, text and bytes length-prefixed.
    def field(data: bytes) -> bytes:
        return struct.pack(">q", len(data)) + data

    expected = hashlib.sha256(
        bytes(32)
        + struct.pack(">q", 7)
        + field(b"0b7e3a52-6d7c-4c39-9a36-3f1f1c9d2b11")
        + struct.pack(">q", 3)
        + field(b"domain.keys:ApiKey.Revoked")
        + field(b'{"reason":"leak"}')
    ).digest()
    actual = link_digest(
        GENESIS,
        7,
        "0b7e3a52-6d7c-4c39-9a36-3f1f1c9d2b11",
        3,
        "domain.keys:ApiKey.Revoked",
        b'{"reason":"leak"}',
    )
    assert bytes(32) == GENESIS
    assert actual == expected


def test_moving_bytes_between_fields_changes_the_digest() -> None:
    assert link_digest(GENESIS, 1, "ab", 1, "c", b"") != link_digest(GENESIS, 1, "a", 1, "bc", b"")
    assert link_digest(GENESIS, 1, "a", 1, "b", b"c") != link_digest(GENESIS, 1, "a", 1, "bc", b"")


def test_a_previous_digest_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        link_digest(bytes(31), 1, "a", 1, "b", b"")


def test_an_originator_id_is_one_text_whichever_store_read_it() -> None:
    hyphenated = str(KEY)
    assert canonical_originator_id(KEY) == hyphenated  # PostgreSQL's uuid column
    assert canonical_originator_id(KEY.hex) == hyphenated  # SQLite's hex column
    assert canonical_originator_id("not-a-uuid") == "not-a-uuid"
    assert canonical_originator_id(42) is None
    a = stored_event([1, KEY.hex, 1, "t", b"s"])
    b = stored_event([1, KEY, 1, "t", memoryview(b"s")])
    assert a == b and a.identity == (hyphenated, 1)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        (1, 42, "originator id is a int"),
        (2, "3", "version is a str"),
        (2, True, "version is a bool"),
        (3, b"topic", "topic is a bytes"),
        (4, "text", "state is a str, not bytes"),
    ],
)
def test_a_row_no_store_could_have_written_is_malformed_at_its_position(
    column: int, value: object, reason: str
) -> None:
    stored = rows()
    stored[2][column] = value
    with pytest.raises(Malformed, match="position 3 ") as error:
        stored_event(stored[2])
    assert error.value.position == 3 and error.value.reason.startswith("its " + reason)
    events, malformed = well_formed_prefix(stored)
    assert [e.position for e in events] == [1, 2] and malformed is not None
    assert malformed.position == 3


def test_links_chain_each_digest_to_the_previous_and_recompute_to_the_same_head() -> None:
    links = links_of(rows())
    assert [link.position for link in links] == [1, 2, 3, 5, 6]  # a gap in the ids is kept
    events, _ = well_formed_prefix(rows())
    previous = GENESIS
    for link, event in zip(links, events, strict=True):
        assert link.identity == event.identity
        previous = link_digest(
            previous,
            event.position,
            event.originator_id,
            event.originator_version,
            event.topic,
            event.state,
        )
        assert link.digest == previous.hex()
    # chaining in two batches gives the chain chaining in one does
    first = chain_links(GENESIS, events[:2])
    assert first + chain_links(bytes.fromhex(first[-1].digest), events[2:]) == links
    assert recompute_digest(rows()) == (bytes.fromhex(links[-1].digest), 5)
    broken = rows()
    broken[3][4] = "text"
    assert recompute_digest(broken) == (None, 3)


def test_an_untouched_sequence_has_no_difference() -> None:
    assert first_difference(rows(), links_of(rows()), nowhere) == (None, 5)
    assert first_difference([], [], nowhere) == (None, 0)


def test_edited_state_is_altered_at_its_position() -> None:
    links, tampered = links_of(rows()), rows()
    tampered[2][4] = b'{"amount":9999}'
    difference, checked = first_difference(tampered, links, nowhere)
    assert difference is not None and (difference.kind, difference.position) == ("altered", 3)
    assert checked == 2 and "position 3 " in difference.message


def test_a_deleted_row_is_removed_and_an_unchained_one_inserted() -> None:
    links = links_of(rows())
    removed, checked = first_difference(rows()[:2] + rows()[3:], links, nowhere)
    assert removed is not None and (removed.kind, removed.position, checked) == ("removed", 3, 2)
    forged = [4, PAGE, 9, "domain.ledger:LedgerPage.Funded", b'{"amount":1000}']
    stored = rows()
    stored.insert(3, forged)  # into the gap at position 4
    inserted, checked = first_difference(stored, links, nowhere)
    assert inserted is not None and (inserted.kind, inserted.position) == ("inserted", 4)
    assert checked == 3


def test_swapped_rows_are_reordered_when_the_chain_knows_where_the_event_was() -> None:
    links = links_of(rows())
    where = {link.identity: link.position for link in links}
    stored = rows()
    stored[1][1:], stored[2][1:] = stored[2][1:], stored[1][1:]  # positions 2 and 3 trade rows
    difference, checked = first_difference(stored, links, where.get)
    assert difference is not None and (difference.kind, difference.position) == ("reordered", 2)
    assert "position 2 holds the event chained at position 3" in difference.message
    assert checked == 1
    unlocated, _ = first_difference(stored, links, nowhere)  # not found in the chain: altered
    assert unlocated is not None and unlocated.kind == "altered"


def test_a_malformed_row_is_altered_with_its_reason() -> None:
    links, stored = links_of(rows()), rows()
    stored[4][4] = "text"
    difference, checked = first_difference(stored, links, nowhere)
    assert difference is not None and (difference.kind, difference.position) == ("altered", 6)
    assert "state is a str" in difference.message and checked == 4


def test_a_checkpoint_round_trips_and_refuses_another_format() -> None:
    checkpoint = Checkpoint(6, "ab" * 32, datetime(2031, 3, 14, 9, tzinfo=UTC))
    assert Checkpoint.from_json(checkpoint.to_json()) == checkpoint
    with pytest.raises(ChainError, match="unknown checkpoint format"):
        Checkpoint.from_json({**checkpoint.to_json(), "format": "md5"})
    with pytest.raises(ChainError, match="not a chain checkpoint"):
        Checkpoint.from_json({"digest": "ab"})

"""Group lookup: the key lookups of concurrent requests share one read, each gets its own answer,
and a read never answers a lookup asked before a change it should see (SQLite and PostgreSQL)."""

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError, Future

import pytest

from domain.actor import Actor
from domain.scope import Scope
from domain.tokens import hash_token, parse_token
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections.lookup import GroupLookup, KeyLookup, KeyRecord

OPERATOR = Actor("operator", "test")
TIMEOUT = 30


class SlowCountingLookup(KeyLookup):
    """The real lookup, counting reads; each read can be held until the test lets it go."""

    def __init__(self, inner: KeyLookup) -> None:
        self.inner = inner
        self.reads: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.reading = threading.Event()

    def find_many(self, token_hashes: Sequence[str]) -> dict[str, KeyRecord]:
        self.reading.set()
        self.gate.wait(TIMEOUT)
        self.reads.append(len(token_hashes))
        return self.inner.find_many(token_hashes)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(settings)
    yield runtime
    runtime.close()


def make_keys(runtime: Runtime, count: int) -> list[tuple[str, str]]:
    """(token hash, key id) of `count` new inference keys."""
    account = runtime.app.open_account("group", OPERATOR, credits=1).account
    made = []
    for i in range(count):
        issued = runtime.app.create_key(account.id, f"k{i}", Scope(), OPERATOR)
        digest = hash_token(runtime.settings.pepper, parse_token(issued.token.value))
        made.append((digest, str(issued.key.id)))
    return made


def test_concurrent_lookups_share_reads_and_each_gets_its_own_key(runtime: Runtime) -> None:
    keys = make_keys(runtime, 5)
    counting = SlowCountingLookup(runtime.lookup)
    group = GroupLookup(counting)
    try:
        counting.gate.clear()
        first = group.find(keys[0][0])  # the read in progress holds this one
        assert counting.reading.wait(TIMEOUT)
        wanted = [digest for digest, _ in keys] * 20 + ["0" * 64]
        futures = [group.find(digest) for digest in wanted]
        counting.gate.set()
        answers = [future.result(TIMEOUT) for future in futures]
        assert first.result(TIMEOUT) is not None
    finally:
        group.close()
    ids = dict(keys)
    for digest, record in zip(wanted, answers, strict=True):
        if digest in ids:
            assert record is not None and str(record.key_id) == ids[digest]
        else:
            assert record is None
    # 101 lookups queued behind one read were answered by one more read of 6 distinct hashes.
    assert counting.reads == [1, 6]


def test_a_lookup_asked_after_a_revocation_sees_it(runtime: Runtime) -> None:
    [(digest, _)] = make_keys(runtime, 1)
    group = GroupLookup(runtime.lookup)
    try:
        record = group.find(digest).result(TIMEOUT)
        assert record is not None and record.status == "active"
        runtime.app.revoke_key(record.key_id, OPERATOR, "leak")
        after = group.find(digest).result(TIMEOUT)
        assert after is not None and after.status == "revoked"
    finally:
        group.close()


def test_a_cancelled_lookup_is_dropped_and_a_failed_read_fails_only_its_own_batch(
    runtime: Runtime,
) -> None:
    [(digest, _)] = make_keys(runtime, 1)
    counting = SlowCountingLookup(runtime.lookup)
    group = GroupLookup(counting)
    try:
        counting.gate.clear()
        holding = group.find(digest)
        assert counting.reading.wait(TIMEOUT)
        gone: Future[KeyRecord | None] = group.find(digest)
        assert gone.cancel()  # the client went away before its read began
        counting.gate.set()
        assert holding.result(TIMEOUT) is not None
        with pytest.raises(CancelledError):
            gone.result(TIMEOUT)

        broken = KeyLookup(sqlite_path="/nonexistent/dir/lookup.db")
        group.lookup = broken
        with pytest.raises(Exception, match="unable to open"):
            group.find(digest).result(TIMEOUT)
        group.lookup = counting
        assert group.find(digest).result(TIMEOUT) is not None  # the thread lives on
    finally:
        group.close()


def test_a_lookup_after_close_is_answered_at_once(runtime: Runtime) -> None:
    [(digest, _)] = make_keys(runtime, 1)
    group = GroupLookup(runtime.lookup)
    assert group.find(digest).result(TIMEOUT) is not None
    group.close()
    with pytest.raises(RuntimeError, match="closed"):
        group.find(digest).result(TIMEOUT)

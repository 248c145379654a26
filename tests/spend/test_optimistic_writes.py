"""The writer's optimistic path: an account only this process writes is saved without the page
lock or a read; another process's write makes the next save conflict, and the writer then catches
up under the lock. A refusal is always judged on fresh figures (on SQLite and PostgreSQL)."""

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from uuid import UUID, uuid4

import pytest

from application.app import Lowrouter
from application.spend import SpendControl
from domain.errors import InsufficientCredits
from domain.scope import Scope
from infrastructure.persistence import build_app, build_page_lock
from infrastructure.settings import Settings
from tests.support.spend import OPERATOR, TIMEOUT, usage


class CountingLock:
    """The real page lock, counting how often a batch took it."""

    def __init__(self, database_url: str) -> None:
        self.inner = build_page_lock(database_url)
        self.taken = 0

    def __call__(self, accounts: Sequence[UUID]) -> AbstractContextManager[object]:
        self.taken += 1
        return self.inner(accounts)


@pytest.fixture
def two_writers(
    settings: Settings,
) -> Iterator[tuple[Lowrouter, list[tuple[SpendControl, CountingLock]]]]:
    """Two applications with their own writers on one store: two gateway processes."""
    apps = [build_app(settings), build_app(settings)]
    writers = []
    for app in apps:
        lock = CountingLock(settings.database_url)
        writers.append((SpendControl(app, lock), lock))
    yield apps[0], writers
    for spend, _ in writers:
        spend.close()
    for app in apps:
        app.close()


def open_account(app: Lowrouter, credits: int) -> tuple[UUID, UUID]:
    account = app.open_account(f"optimistic-{uuid4().hex}", OPERATOR, credits=credits).account
    key = app.create_key(account.id, "k", Scope(), OPERATOR).key
    return account.id, key.id


def spend_once(spend: SpendControl, account_id: UUID, key_id: UUID, amount: int) -> None:
    request_id = uuid4().hex
    spend.reserve(account_id, request_id, key_id, "test/model", amount, None).result(TIMEOUT)
    spend.settle(account_id, request_id, amount, usage()).result(TIMEOUT)


def test_an_account_only_this_process_writes_never_takes_the_lock(
    two_writers: tuple[Lowrouter, list[tuple[SpendControl, CountingLock]]],
) -> None:
    app, [(spend, lock), _] = two_writers
    account_id, key_id = open_account(app, credits=1_000_000)
    spend_once(spend, account_id, key_id, 100)  # the first batch loads the page
    taken = lock.taken
    for _ in range(20):
        spend_once(spend, account_id, key_id, 100)
    assert lock.taken == taken
    assert spend.conflicts == 0
    assert spend.view(account_id).result(TIMEOUT).balance == 1_000_000 - 21 * 100


def test_a_write_by_another_process_is_caught_up_under_the_lock_and_nothing_is_lost(
    two_writers: tuple[Lowrouter, list[tuple[SpendControl, CountingLock]]],
) -> None:
    app, [(first, first_lock), (second, _)] = two_writers
    account_id, key_id = open_account(app, credits=1_000_000)
    spend_once(first, account_id, key_id, 100)
    spend_once(second, account_id, key_id, 200)  # first's cached page is now stale
    taken = first_lock.taken
    spend_once(first, account_id, key_id, 300)
    assert first.conflicts == 1 and first_lock.taken > taken
    # Every charge is on the books exactly once, whichever writer looks.
    for spend in (first, second):
        assert spend.view(account_id).result(TIMEOUT).balance == 1_000_000 - 600
    # The account is contended now: its next batches take turns under the lock.
    taken = first_lock.taken
    spend_once(first, account_id, key_id, 1)
    assert first_lock.taken == taken + 2 and first.conflicts == 1


def test_a_refusal_is_judged_on_fresh_figures_after_another_process_added_credits(
    two_writers: tuple[Lowrouter, list[tuple[SpendControl, CountingLock]]],
) -> None:
    app, [(gateway, _), (operator, _)] = two_writers
    account_id, key_id = open_account(app, credits=100)
    spend_once(gateway, account_id, key_id, 100)  # the gateway's cache: nothing left
    with pytest.raises(InsufficientCredits):
        spend_once(gateway, account_id, key_id, 50)
    operator.fund(account_id, 1_000, OPERATOR).result(TIMEOUT)  # e.g. `lowrouter credits add`
    # No write of the gateway's would conflict to reveal the funding: the refusal itself must
    # be checked against the store before it is given.
    spend_once(gateway, account_id, key_id, 50)
    assert gateway.view(account_id).result(TIMEOUT).balance == 1_000 - 50


def test_refusals_are_checked_on_fresh_figures_without_taking_the_lock(
    two_writers: tuple[Lowrouter, list[tuple[SpendControl, CountingLock]]],
) -> None:
    """A client retrying with an exhausted key must not make every batch take turns."""
    app, [(gateway, lock), _] = two_writers
    account_id, key_id = open_account(app, credits=100)
    spend_once(gateway, account_id, key_id, 100)
    taken = lock.taken
    for _ in range(10):
        with pytest.raises(InsufficientCredits):
            spend_once(gateway, account_id, key_id, 50)
    assert lock.taken == taken and gateway.conflicts == 0


class CountingObserver:
    """The writer's observer (metrics in production), counting what it is told."""

    def __init__(self) -> None:
        self.commits = self.conflicts = self.turns = 0

    def committed(self, seconds: float, commands: int) -> None:
        self.commits += 1

    def conflicted(self, locked: bool) -> None:
        self.conflicts += 1

    def took_turns(self) -> None:
        self.turns += 1


def test_the_observer_is_told_of_each_conflict_and_each_batch_that_took_turns(
    settings: Settings,
) -> None:
    apps = [build_app(settings), build_app(settings)]
    observer = CountingObserver()
    first = SpendControl(apps[0], build_page_lock(settings.database_url), observer)
    second = SpendControl(apps[1], build_page_lock(settings.database_url))
    try:
        account_id, key_id = open_account(apps[0], credits=1_000_000)
        spend_once(first, account_id, key_id, 100)
        assert observer.conflicts == 0
        turns = observer.turns
        spend_once(second, account_id, key_id, 200)  # first's cached page is now stale
        spend_once(first, account_id, key_id, 300)
        # The reserve conflicted and took turns; the settle took turns (the account is contended).
        assert observer.conflicts == 1 and observer.turns == turns + 2
    finally:
        for spend in (first, second):
            spend.close()
        for app in apps:
            app.close()

"""Replay for auditors: a key's or an account's history, and the state it produced at any moment,
rebuilt from the events alone (never from a projection).

The state "as of T" is the aggregate at the last version whose event time is ≤ T: a stream is
replayed in version order and stops at its first event after T (a stream is never replayed with a
gap, even if a clock between processes went backwards). An account's history also carries its
books (application.books), recomputed from its pages' events.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from application.app import Lowrouter
from application.books import Books
from application.clock import utc_day
from application.events import stored_events
from domain.accounts import Account
from domain.errors import NotFound
from domain.keys import ApiKey
from domain.ledger import LedgerPage, page_id

Event = Aggregate.Event
A = TypeVar("A", bound=Aggregate)

# Replaying one stream ---------------------------------------------------------------------------


def up_to(events: Iterable[Event], as_of: datetime | None) -> list[Event]:
    """The events of one stream, in version order, up to its first event after `as_of`."""
    kept: list[Event] = []
    for event in events:
        if as_of is not None and event.timestamp > as_of:
            break
        kept.append(event)
    return kept


def rebuild(events: Sequence[Event], kind: type[A]) -> A | None:
    """The aggregate, of type `kind`, these events produce (None when there are none)."""
    aggregate: Aggregate | None = None
    for event in events:
        aggregate = event.mutate(aggregate)
    if aggregate is not None and not isinstance(aggregate, kind):
        raise TypeError(f"these events make a {type(aggregate).__name__}, not a {kind.__name__}")
    return aggregate


# Keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyHistory:
    key_id: UUID
    events: list[Event]  # oldest first, up to as_of
    state: ApiKey | None  # what those events made (None before the key existed)
    as_of: datetime | None

    @property
    def lifecycle(self) -> list[Event]:
        """What people did to the key (attempts to use it after revocation are listed apart)."""
        return [e for e in self.events if not isinstance(e, ApiKey.UsedAfterRevocation)]

    @property
    def attempts_after_revocation(self) -> list[ApiKey.UsedAfterRevocation]:
        return [e for e in self.events if isinstance(e, ApiKey.UsedAfterRevocation)]


def key_history(
    app: Lowrouter, key_id: UUID, as_of: datetime | None = None, account_id: UUID | None = None
) -> KeyHistory:
    """A key's events and its state at `as_of`; with `account_id`, another account's key is
    reported as missing."""
    events = list(stored_events(app, key_id))
    if not events or not isinstance(events[0], ApiKey.Created):
        raise NotFound(f"no key {key_id}")
    if account_id is not None and events[0].account_id != account_id:
        raise NotFound(f"no key {key_id}")
    kept = up_to(events, as_of)
    return KeyHistory(key_id, kept, rebuild(kept, ApiKey), as_of)


def is_key(app: Lowrouter, aggregate_id: UUID) -> bool:
    first = next(iter(app.events.get(aggregate_id, limit=1)), None)
    return isinstance(first, ApiKey.Created)


# Accounts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageHistory:
    page_id: UUID
    day: str
    events: list[Event]
    state: LedgerPage  # the page as the aggregate's own rules replay it


@dataclass(frozen=True)
class AccountHistory:
    account_id: UUID
    events: list[Event]
    state: Account | None
    pages: list[PageHistory]
    books: Books
    as_of: datetime | None

    @property
    def name(self) -> str:
        opened = self.events[0] if self.events else None
        return opened.name if isinstance(opened, Account.Opened) else str(self.account_id)


def account_history(
    app: Lowrouter, account_id: UUID, as_of: datetime | None = None
) -> AccountHistory:
    """An account's events, every ledger page it has (walking its days from the day before it
    opened to the day after `as_of` or now), and its books recomputed from them."""
    events = list(stored_events(app, account_id))
    if not events or not isinstance(events[0], Account.Opened):
        raise NotFound(f"no account {account_id}")
    kept = up_to(events, as_of)
    first = utc_day(events[0].timestamp) - timedelta(days=1)
    last = utc_day(as_of or app.clock()) + timedelta(days=1)
    pages = list(_pages(app, account_id, first, last, as_of))
    books = Books(account_id)
    for page in pages:
        for event in page.events:
            books.record(event)
    if pages and pages[-1].state.balance != books.balance:
        books.problems.append(
            f"the last page replays to a balance of {pages[-1].state.balance}; "
            f"the sum of its events is {books.balance}"
        )
    return AccountHistory(account_id, kept, rebuild(kept, Account), pages, books, as_of)


def _pages(
    app: Lowrouter, account_id: UUID, first: date, last: date, as_of: datetime | None
) -> Iterator[PageHistory]:
    day = first
    while day <= last:
        page = page_id(account_id, day)
        events = up_to(stored_events(app, page), as_of)
        state = rebuild(events, LedgerPage)
        if state is not None:  # the page of a day with no events is never opened
            yield PageHistory(page, day.isoformat(), events, state)
        day += timedelta(days=1)

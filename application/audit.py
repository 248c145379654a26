"""Replay for auditors: a key's or an account's history, and the state it produced at any moment,
rebuilt from the events alone (never from a projection).

The state "as of T" is the aggregate at the last version whose event time is ≤ T: a stream is
replayed in version order and stops at its first event after T (a stream is never replayed with a
gap, even if a clock between processes went backwards).

An account's money is recomputed from first principles: the opening balance of its first ledger
page, plus every Funded and Adjusted amount, minus every Settled cost; a key's spend on a day is
the sum of the Settled costs of the requests reserved that day. The same events are also replayed
through the LedgerPage aggregate, and every page's opening and closing balance is checked against
the running total, so an inconsistency inside the log itself shows as a `problem`.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from application.clock import utc_day
from application.events import stored_events
from application.keys import Lowrouter
from domain.accounts import Account
from domain.errors import NotFound
from domain.keys import ApiKey
from domain.ledger import LedgerPage, page_id
from domain.money import format_credits

Event = Aggregate.Event

# Replaying one stream ---------------------------------------------------------------------------


def up_to(events: Iterable[Event], as_of: datetime | None) -> list[Event]:
    """The events of one stream, in version order, up to its first event after `as_of`."""
    kept: list[Event] = []
    for event in events:
        if as_of is not None and event.timestamp > as_of:
            break
        kept.append(event)
    return kept


def rebuild(events: Sequence[Event]) -> Any:
    """The aggregate these events produce (None when there are none)."""
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
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
    return KeyHistory(key_id, kept, rebuild(kept), as_of)


def is_key(app: Lowrouter, aggregate_id: UUID) -> bool:
    first = next(iter(app.events.get(aggregate_id, limit=1)), None)
    return isinstance(first, ApiKey.Created)


# Money, from first principles -------------------------------------------------------------------


@dataclass
class DaySpend:
    cost: int = 0
    requests: int = 0


@dataclass
class Books:
    """An account's money recomputed by summing its ledger events, in order."""

    account_id: UUID
    opening: int = 0
    funded: int = 0
    settled: int = 0
    adjusted: int = 0
    open_holds: dict[str, int] = field(default_factory=dict)  # request id -> amount held
    spend: dict[tuple[str, str], DaySpend] = field(default_factory=dict)  # (key id, day)
    pages: int = 0
    problems: list[str] = field(default_factory=list)  # inconsistencies inside the log

    @property
    def balance(self) -> int:
        return self.opening + self.funded + self.adjusted - self.settled

    @property
    def held(self) -> int:
        return sum(self.open_holds.values())

    def record(self, event: Event) -> None:
        handler = _BOOKKEEPING.get(type(event))
        if handler is not None:
            handler(self, event)

    def _opened(self, e: LedgerPage.Opened) -> None:
        if self.pages == 0:
            self.opening = e.opening_balance
        elif e.opening_balance != self.balance:
            self._problem(e, f"opened with {e.opening_balance}, the books say {self.balance}")
        if set(e.carried_holds) != set(self.open_holds):
            self._problem(e, "carried holds differ from the holds open at the close")
        self.pages += 1

    def _funded(self, e: LedgerPage.Funded) -> None:
        self.funded += e.amount

    def _reserved(self, e: LedgerPage.Reserved) -> None:
        self.open_holds[e.request_id] = e.amount

    def _settled(self, e: LedgerPage.Settled) -> None:
        if self.open_holds.pop(e.request_id, None) is None:
            self._problem(e, f"settles {e.request_id}, which was not held")
        self.settled += e.cost
        day = self.spend.setdefault((e.key_id, e.reserved_day), DaySpend())
        day.cost += e.cost
        day.requests += 1

    def _released(self, e: LedgerPage.Released) -> None:
        if self.open_holds.pop(e.request_id, None) is None:
            self._problem(e, f"releases {e.request_id}, which was not held")

    def _adjusted(self, e: LedgerPage.Adjusted) -> None:
        self.adjusted += e.amount

    def _closed(self, e: LedgerPage.Closed) -> None:
        if e.closing_balance != self.balance:
            self._problem(e, f"closed with {e.closing_balance}, the books say {self.balance}")

    def _problem(self, event: Event, text: str) -> None:
        self.problems.append(
            f"page {event.originator_id} v{event.originator_version} "
            f"({type(event).__name__}): {text}"
        )


_BOOKKEEPING: dict[type, Callable[[Books, Any], None]] = {
    LedgerPage.Opened: Books._opened,
    LedgerPage.Funded: Books._funded,
    LedgerPage.Reserved: Books._reserved,
    LedgerPage.Settled: Books._settled,
    LedgerPage.Released: Books._released,
    LedgerPage.Adjusted: Books._adjusted,
    LedgerPage.Closed: Books._closed,
}

# Every topic of the ledger's money, for a scan of the whole log.
LEDGER_TOPICS = tuple(get_topic(cls) for cls in _BOOKKEEPING)


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
    return AccountHistory(account_id, kept, rebuild(kept), pages, books, as_of)


def _pages(
    app: Lowrouter, account_id: UUID, first: date, last: date, as_of: datetime | None
) -> Iterator[PageHistory]:
    day = first
    while day <= last:
        page = page_id(account_id, day)
        events = up_to(stored_events(app, page), as_of)
        if events:
            yield PageHistory(page, day.isoformat(), events, rebuild(events))
        day += timedelta(days=1)


# The whole log, for --verify-balances -----------------------------------------------------------

SCAN_BATCH = 2000


@dataclass
class LedgerScan:
    """Every account's books up to one position of the log, and where each account's last page
    stood then (to compare with the page aggregate as the repository loads it)."""

    position: int
    books: dict[UUID, Books] = field(default_factory=dict)
    names: dict[UUID, str] = field(default_factory=dict)
    last_page: dict[UUID, tuple[UUID, int]] = field(default_factory=dict)  # page id, version
    problems: list[str] = field(default_factory=list)  # events of pages that never opened


def scan_ledger(app: Lowrouter, position: int) -> LedgerScan:
    """Read the log from the start to `position` (inclusive), keeping the books of every account.

    One pass in log order: a page's events come in version order, and an account's pages in the
    order they were opened (the old page is closed in the save that opens the new one)."""
    scan = LedgerScan(position)
    page_accounts: dict[UUID, UUID] = {}
    topics = (*LEDGER_TOPICS, get_topic(Account.Opened))
    start = 1
    while start <= position:
        notifications = app.recorder.select_notifications(
            start=start, limit=SCAN_BATCH, stop=position, topics=topics
        )
        for notification in notifications:
            _scan_one(scan, page_accounts, app.mapper.to_domain_event(notification))
        if len(notifications) < SCAN_BATCH:
            break
        start = notifications[-1].id + 1
    return scan


def _scan_one(scan: LedgerScan, page_accounts: dict[UUID, UUID], event: Any) -> None:
    if isinstance(event, Account.Opened):
        scan.names[event.originator_id] = event.name
        scan.books.setdefault(event.originator_id, Books(event.originator_id))
        return
    if isinstance(event, LedgerPage.Opened):
        page_accounts[event.originator_id] = event.account_id
    account_id = page_accounts.get(event.originator_id)
    if account_id is None:
        scan.problems.append(
            f"page {event.originator_id} v{event.originator_version} "
            f"({type(event).__name__}): the page was never opened"
        )
        return
    scan.books.setdefault(account_id, Books(account_id)).record(event)
    scan.last_page[account_id] = (event.originator_id, event.originator_version)


def page_balance(app: Lowrouter, page: UUID, version: int) -> int:
    """A page's balance at `version` as the repository loads it (snapshot plus later events)."""
    loaded: Aggregate = app.repository.get(page, version=version)
    assert isinstance(loaded, LedgerPage)
    return loaded.balance


# Comparing with what the read models say ---------------------------------------------------------

Where = tuple[str, str | None, str | None]  # (account id, key id or None, day or None)
Figures = dict[Where, tuple[int, int]]  # an amount and a count (requests, or holds)


@dataclass(frozen=True)
class Difference:
    """One figure the events and a read model (or the page aggregate) disagree on."""

    what: str  # e.g. "daily spend (lr_daily_spend)"
    account_id: str
    key_id: str | None
    day: str | None
    from_events: str
    recorded: str


def verify_books(
    app: Lowrouter,
    scan: LedgerScan,
    recorded: dict[str, Figures],
) -> list[Difference]:
    """Compare the books recomputed from the log with what read models recorded.

    `recorded` maps a read model's name to its figures: "lr_daily_spend" and "lr_usage" per
    (account, key, day) as (cost, requests); "lr_holds" per account as (amount held, holds).
    Every account's balance is also compared with its last ledger page as the repository loads
    it (from a snapshot, when there is one, plus the events after it)."""
    spend = expected_spend(scan)
    held = expected_holds(scan)
    differences = [
        *compare("daily spend (lr_daily_spend)", spend, recorded.get("lr_daily_spend", {})),
        *compare("usage rows (lr_usage)", spend, recorded.get("lr_usage", {})),
        *compare("open holds (lr_holds)", held, recorded.get("lr_holds", {}), "holds"),
    ]
    for account_id, (page, version) in sorted(scan.last_page.items()):
        expected = scan.books[account_id].balance
        loaded = page_balance(app, page, version)
        if loaded != expected:
            differences.append(
                Difference(
                    f"balance (ledger page {page} at version {version})",
                    str(account_id),
                    None,
                    None,
                    _money(expected),
                    _money(loaded),
                )
            )
    return differences


def expected_spend(scan: LedgerScan) -> Figures:
    return {
        (str(account_id), key_id, day): (spent.cost, spent.requests)
        for account_id, books in scan.books.items()
        for (key_id, day), spent in books.spend.items()
    }


def expected_holds(scan: LedgerScan) -> Figures:
    return {
        (str(account_id), None, None): (books.held, len(books.open_holds))
        for account_id, books in scan.books.items()
        if books.open_holds
    }


def compare(
    what: str, expected: Figures, recorded: Figures, counting: str = "requests"
) -> list[Difference]:
    """Every (account, key, day) whose figures differ between the events and a read model."""
    differences = []
    for where in sorted(set(expected) | set(recorded), key=_sort_key):
        from_events, in_model = expected.get(where), recorded.get(where)
        if from_events != in_model:
            account, key, day = where
            differences.append(
                Difference(
                    what,
                    account,
                    key,
                    day,
                    _figure(from_events, counting),
                    _figure(in_model, counting),
                )
            )
    return differences


def _figure(figure: tuple[int, int] | None, counting: str) -> str:
    if figure is None:
        return "(none)"
    amount, count = figure
    return f"{_money(amount)} in {count} {counting}"


def _money(micro: int) -> str:
    return format_credits(micro)


def _sort_key(where: Where) -> tuple[str, str, str]:
    return (where[0], where[1] or "", where[2] or "")

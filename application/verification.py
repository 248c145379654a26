"""verify-balances: every account's books recomputed from the whole log, compared with what the
read models recorded and with each account's last ledger page as the repository loads it.

The read models are a port: `verify_balances` takes a function that reads their figures (the
usage projection's tables: projections.queries.forensics.recorded_money), so it has no SQL.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from application.app import Lowrouter
from application.books import LEDGER_TOPICS, Books
from domain.accounts import Account
from domain.ledger import LedgerPage
from domain.money import format_credits

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


# The use case -----------------------------------------------------------------------------------


class RecordedFigures(Protocol):
    """What the read models recorded, all read at one position of the log."""

    @property
    def position(self) -> int: ...

    @property
    def figures(self) -> dict[str, Figures]: ...  # read model -> figures (see verify_books)


@dataclass(frozen=True)
class AccountCheck:
    account_id: UUID
    name: str | None
    balance: int
    held: int
    key_days: int  # (key, day) pairs with spend
    differences: int


@dataclass(frozen=True)
class BalanceCheck:
    """The outcome of verify-balances: every account's books, and what disagrees."""

    position: int  # the log was read up to here, where the read models stood
    accounts: list[AccountCheck]  # by name, then id
    differences: list[Difference]
    problems: list[str]  # inconsistencies inside the log itself

    @property
    def ok(self) -> bool:
        return not self.differences and not self.problems


def verify_balances(app: Lowrouter, read_recorded: Callable[[], RecordedFigures]) -> BalanceCheck:
    """Recompute every account's balance and every key's daily spend from the events up to where
    the read models stand, and compare them with the read models and the ledger pages as loaded."""
    recorded = read_recorded()
    scan = scan_ledger(app, recorded.position)
    differences = verify_books(app, scan, recorded.figures)
    problems = [*scan.problems, *(p for books in scan.books.values() for p in books.problems)]
    accounts = [
        AccountCheck(
            account_id,
            scan.names.get(account_id),
            books.balance,
            books.held,
            len(books.spend),
            sum(1 for d in differences if d.account_id == str(account_id)),
        )
        for account_id, books in scan.books.items()
    ]
    accounts.sort(key=lambda a: (a.name or "", str(a.account_id)))
    return BalanceCheck(scan.position, accounts, differences, problems)

"""An account's money recomputed from first principles: the opening balance of its first ledger
page, plus every Funded and Adjusted amount, minus every Settled cost; a key's spend on a day is
the sum of the Settled costs of the requests reserved that day. Every page's opening and closing
balance is checked against the running total, so an inconsistency inside the log itself shows as
a `problem`.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.ledger import LedgerPage

Event = Aggregate.Event

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

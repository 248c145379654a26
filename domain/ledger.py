"""The credit ledger: one page per account per UTC day ("closing the books").

A page opens with the previous page's closing balance and its still-open holds, and records every
credit movement of that day: Funded, Reserved, Settled, Released, Adjusted, and Refused facts.
Its invariants, checked before any event is recorded, are the product's promises:

- for each key, today's settled + held spend stays within the key's daily limit;
- the account's balance minus everything held never goes below zero.

The event store's unique (stream, version) constraint makes them hold across processes.
A hold is charged to the day it was reserved in, even when it settles on a later page.
"""

from datetime import date, datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor
from domain.bounds import bounded_usage
from domain.errors import DailyLimitExceeded, DomainError, InsufficientCredits, InvalidAmount

_PAGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://lowrouter.dev/ledger-page")


def page_id(account_id: UUID, day: date) -> UUID:
    """Pages have deterministic ids, so any process finds the page of a day without an index."""
    return uuid5(_PAGE_NAMESPACE, f"{account_id}/{day.isoformat()}")


class LedgerPage(Aggregate):
    class Opened(Aggregate.Created):
        account_id: UUID
        day: str
        opening_balance: int
        carried_holds: dict[str, dict[str, Any]]

    class Funded(Aggregate.Event):
        amount: int
        actor: dict[str, Any]

        def apply(self, page: "LedgerPage") -> None:
            page.balance += self.amount
            page.funded += self.amount

    class Reserved(Aggregate.Event):
        request_id: str
        key_id: str
        model: str
        amount: int

        def apply(self, page: "LedgerPage") -> None:
            page.holds[self.request_id] = {
                "key_id": self.key_id,
                "amount": self.amount,
                "day": page.day,
                "model": self.model,
                "at": self.timestamp.isoformat(),
            }
            page.held_today[self.key_id] = page.held_today.get(self.key_id, 0) + self.amount
            page.total_held += self.amount

    class Settled(Aggregate.Event):
        """A completion, charged. Also the usage record: the usage history is built from these."""

        request_id: str
        key_id: str
        key_name: str
        reserved_day: str
        held: int
        cost: int
        model: str
        provider: str | None
        region: str | None
        prompt_tokens: int
        completion_tokens: int
        status: str  # "ok", "upstream_error", "client_closed", "unsettled", …
        status_code: int
        latency_ms: int
        streamed: bool
        client_ip: str | None
        user_agent: str | None
        flags: list[str]

        def apply(self, page: "LedgerPage") -> None:
            page._drop_hold(self.request_id)
            page.balance -= self.cost
            page.settled += self.cost
            if self.reserved_day == page.day:
                page.spent_today[self.key_id] = page.spent_today.get(self.key_id, 0) + self.cost

    class Released(Aggregate.Event):
        request_id: str
        reason: str

        def apply(self, page: "LedgerPage") -> None:
            page._drop_hold(self.request_id)

    class Refused(Aggregate.Event):
        """A refused request (no money moved). `count` folds a burst of refusals into one fact."""

        key_id: str
        reason: str
        count: int

    class Adjusted(Aggregate.Event):
        """A correction (positive credits back, negative charges more), never an edit."""

        amount: int
        reason: str
        key_id: str | None
        actor: dict[str, Any]

        def apply(self, page: "LedgerPage") -> None:
            page.balance += self.amount
            page.adjusted += self.amount

    class Closed(Aggregate.Event):
        closing_balance: int
        carried_holds: dict[str, dict[str, Any]]

        def apply(self, page: "LedgerPage") -> None:
            page.closed = True

    def __init__(
        self,
        account_id: UUID,
        day: str,
        opening_balance: int,
        carried_holds: dict[str, dict[str, Any]],
    ) -> None:
        self.account_id = account_id
        self.day = day
        self.opening_balance = opening_balance
        self.balance = opening_balance
        self.funded = 0
        self.settled = 0
        self.adjusted = 0
        self.holds: dict[str, dict[str, Any]] = {k: dict(v) for k, v in carried_holds.items()}
        self.total_held = sum(h["amount"] for h in carried_holds.values())
        self.held_today: dict[str, int] = {}  # key id -> today's open holds
        self.spent_today: dict[str, int] = {}  # key id -> today's settled spend
        self.closed = False

    # Creating and closing pages ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        account_id: UUID,
        day: date,
        at: datetime,
        opening_balance: int = 0,
        carried_holds: dict[str, dict[str, Any]] | None = None,
    ) -> "LedgerPage":
        return cls._create(
            cls.Opened,
            id=page_id(account_id, day),
            account_id=account_id,
            day=day.isoformat(),
            opening_balance=opening_balance,
            carried_holds=carried_holds or {},
            timestamp=at,
        )

    def close_and_open(self, day: date, at: datetime) -> "LedgerPage":
        """Close the books on this page and open `day`'s page with its balance and open holds."""
        if day.isoformat() <= self.day:
            raise DomainError(f"cannot open page {day} after page {self.day}")
        self._check_open()
        carried = {k: dict(v) for k, v in self.holds.items()}
        self.trigger_event(
            self.Closed, closing_balance=self.balance, carried_holds=carried, timestamp=at
        )
        return LedgerPage.open(self.account_id, day, at, self.balance, carried)

    # Reading ------------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return self.balance - self.total_held

    def spent_by(self, key_id: str) -> int:
        return self.spent_today.get(key_id, 0)

    def held_by(self, key_id: str) -> int:
        return self.held_today.get(key_id, 0)

    # Commands -----------------------------------------------------------------------------

    def fund(self, amount: int, actor: Actor, at: datetime) -> None:
        self._check_open()
        if not isinstance(amount, int) or amount <= 0:
            raise InvalidAmount("funding must be a positive amount of credits")
        self.trigger_event(self.Funded, amount=amount, actor=actor.as_dict(), timestamp=at)

    def reserve(
        self,
        request_id: str,
        key_id: str,
        model: str,
        amount: int,
        daily_limit: int | None,
        at: datetime,
    ) -> None:
        """Hold a request's maximum cost, or refuse it. Idempotent per request id."""
        self._check_open()
        if request_id in self.holds:
            return
        if amount < 0:
            raise InvalidAmount("a hold cannot be negative")
        if daily_limit is not None:
            spent, held = self.spent_by(key_id), self.held_by(key_id)
            if spent + held + amount > daily_limit:
                raise DailyLimitExceeded(spent, held, daily_limit, amount)
        if self.available < amount:
            raise InsufficientCredits(self.balance, self.total_held, amount)
        self.trigger_event(
            self.Reserved,
            request_id=request_id,
            key_id=key_id,
            model=model,
            amount=amount,
            timestamp=at,
        )

    def settle(self, request_id: str, cost: int, at: datetime, **usage: Any) -> int | None:
        """Charge a held request its real cost, never more than it held (flagged if it would be).

        Returns the amount charged, or None when the hold is already settled or released
        (settling twice charges once).
        """
        self._check_open()
        hold = self.holds.get(request_id)
        if hold is None:
            return None
        if cost < 0:
            raise InvalidAmount("a cost cannot be negative")
        flags = list(usage.pop("flags", []))
        usage, bounding_flags = bounded_usage(usage)
        flags.extend(f for f in bounding_flags if f not in flags)
        if cost > hold["amount"]:
            flags.append("over_hold")
            cost = hold["amount"]
        self.trigger_event(
            self.Settled,
            request_id=request_id,
            key_id=hold["key_id"],
            reserved_day=hold["day"],
            held=hold["amount"],
            cost=cost,
            flags=flags,
            timestamp=at,
            **usage,
        )
        return cost

    def release(self, request_id: str, reason: str, at: datetime) -> bool:
        self._check_open()
        if request_id not in self.holds:
            return False
        self.trigger_event(self.Released, request_id=request_id, reason=reason, timestamp=at)
        return True

    def record_refusal(self, key_id: str, reason: str, count: int, at: datetime) -> None:
        self._check_open()
        self.trigger_event(self.Refused, key_id=key_id, reason=reason, count=count, timestamp=at)

    def adjust(
        self, amount: int, reason: str, actor: Actor, at: datetime, key_id: str | None = None
    ) -> None:
        self._check_open()
        if amount == 0:
            raise InvalidAmount("an adjustment must change the balance")
        if self.balance + amount - self.total_held < 0:
            raise InsufficientCredits(self.balance, self.total_held, -amount)
        self.trigger_event(
            self.Adjusted,
            amount=amount,
            reason=reason,
            key_id=key_id,
            actor=actor.as_dict(),
            timestamp=at,
        )

    def _check_open(self) -> None:
        if self.closed:
            raise DomainError(f"ledger page {self.day} is closed")

    def _drop_hold(self, request_id: str) -> None:
        hold = self.holds.pop(request_id)
        self.total_held -= hold["amount"]
        if hold["day"] == self.day:
            self.held_today[hold["key_id"]] -= hold["amount"]

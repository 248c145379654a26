"""The credit ledger: one page per account per UTC day ("closing the books").

A page opens with the previous page's closing balance and its still-open holds, and records every
credit movement of that day: Funded, Reserved, Settled, Released, Adjusted, and Refused facts.
Its invariants, checked before any event is recorded, are the product's promises:

- for each key, today's settled + held spend stays within the key's daily limit, and this UTC
  month's within its monthly limit (the month-to-date figure moves with the closing balance);
- the account's balance minus everything held never goes below zero;
- for each key with a policy, its reservations in the trailing 60 s stay within
  `requests_per_minute`, its settled tokens plus held token estimates in the trailing 60 s within
  `tokens_per_minute`, and its open holds within `max_concurrent`.

The event store's unique (stream, version) constraint makes them hold across processes.
A hold is charged to the day it was reserved in, even when it settles on a later page.

The figures the limits need are kept by *meter*: the key's rotation lineage (the id of the key
it was first issued as, so a rotation's successor shares its predecessor's day, month, rate
windows and concurrency, and rotating never raises a limit); a hold reserved without one
(events stored before 0.3) is metered under its key's id. The trailing-minute windows are
one-second buckets (at most 60 per meter, and only for keys with a per-minute limit), carried to
the next page with the month-to-date spend, so the state stays small and survives closing the
books.
"""

import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NotRequired, TypedDict
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.actor import Actor, ActorFields
from domain.bounds import MAX_UNBILLED, bounded_usage
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    InvalidAmount,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.policy import NO_POLICY, KeyPolicy
from domain.usage import Usage

_PAGE_NAMESPACE = uuid5(NAMESPACE_URL, "https://lowrouter.dev/ledger-page")


UNSETTLED = "unsettled"  # the status of a hold the reconciler settled at its amount
WINDOW_SECONDS = 60  # the trailing minute of the per-minute limits
Bucket = list[int]  # [second since the epoch, requests, tokens]


class Hold(TypedDict):
    """An open hold, as the page keeps it and as Closed and Opened events carry it (stored)."""

    key_id: str
    amount: int
    day: str  # the day it is charged to (it was reserved on)
    model: str
    at: str  # when it was reserved (ISO 8601)
    meter: NotRequired[str]  # only when not the key id (absent before 0.3)
    tokens: NotRequired[int]  # the token estimate, only for a windowed key
    owner: NotRequired[str]  # the serving process's lease, when it has one


def page_id(account_id: UUID, day: date) -> UUID:
    """Pages have deterministic ids, so any process finds the page of a day without an index."""
    return uuid5(_PAGE_NAMESPACE, f"{account_id}/{day.isoformat()}")


def _second(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _live(buckets: list[Bucket], now_second: int) -> list[Bucket]:
    """The buckets still inside the trailing minute that ends in `now_second`."""
    start = now_second - WINDOW_SECONDS + 1
    return [bucket for bucket in buckets if bucket[0] >= start]


@dataclass(frozen=True, slots=True)
class RateStatus:
    """A metered key's trailing minute after an admission, for the x-ratelimit-* headers."""

    requests_limit: int | None
    requests_remaining: int | None
    requests_reset: float  # seconds until the window is empty of requests
    tokens_limit: int | None
    tokens_remaining: int | None
    tokens_reset: float  # seconds until the window is empty of tokens


@dataclass(frozen=True, slots=True)
class Admission:
    """A reservation that was admitted: the day it is charged to, and the key's window."""

    day: str
    rate: RateStatus | None


class LedgerPage(Aggregate):
    class Opened(Aggregate.Created):
        account_id: UUID
        day: str
        opening_balance: int
        carried_holds: dict[str, Hold]
        # Since 0.3 (absent from older pages, which the defaults of __init__ cover):
        carried_month: dict[str, int]
        carried_windows: dict[str, list[Bucket]]
        # Since class version 3 of the page (absent from older pages): what the reconciler
        # charged on the previous page, by request id (see `reconciled_cost`).
        carried_reconciled: dict[str, int]

    class Funded(Aggregate.Event):
        amount: int
        actor: ActorFields

        def apply(self, page: "LedgerPage") -> None:
            page.balance += self.amount
            page.funded += self.amount

    class Reserved(Aggregate.Event):
        request_id: str
        key_id: str
        model: str
        amount: int
        # Since 0.3 (read with getattr: events stored before have neither): the meter the
        # key's limits are kept under, and the request's token estimate when it is windowed.
        meter: str
        tokens: int | None
        # Since 0.3 too: the gateway process serving the request (its liveness lease), so the
        # reconciler leaves the holds of live processes alone. None: no lease (older events).
        owner: str | None

        def apply(self, page: "LedgerPage") -> None:
            meter = getattr(self, "meter", None) or self.key_id
            tokens = getattr(self, "tokens", None)
            owner = getattr(self, "owner", None)
            hold: Hold = {
                "key_id": self.key_id,
                "amount": self.amount,
                "day": page.day,
                "model": self.model,
                "at": self.timestamp.isoformat(),
            }
            if meter != self.key_id:
                hold["meter"] = meter
            if tokens is not None:
                hold["tokens"] = tokens
            if owner is not None:
                hold["owner"] = owner
            page.holds[self.request_id] = hold
            page.day_held[meter] = page.day_held.get(meter, 0) + self.amount
            page.total_held += self.amount
            page._count_hold(meter, page.day, self.amount, +1)
            if tokens is not None:
                page._window_add(meter, _second(self.timestamp), 1, tokens)

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
        # Since class version 2 (release 0.3): which API, the finer token counts, and where the
        # cost came from. Older events are upcast with the values they implied.
        api: str
        cached_prompt_tokens: int
        cache_write_tokens: int
        reasoning_tokens: int
        cost_source: str
        upstream_cost: str | None
        # Since class version 3: what the usage cost beyond the hold (not charged: `over_hold`).
        unbilled: int

        class_version = 3

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state.update(
                api="chat.completions",
                cached_prompt_tokens=0,
                cache_write_tokens=0,
                reasoning_tokens=0,
                cost_source="estimated" if state.get("status") == "unsettled" else "reported",
                upstream_cost=None,
            )

        @staticmethod
        def upcast_v2_v3(state: dict[str, Any]) -> None:
            state["unbilled"] = 0  # not known before 0.3 (the flag `over_hold` still says so)

        def apply(self, page: "LedgerPage") -> None:
            hold = page._drop_hold(self.request_id, self.prompt_tokens + self.completion_tokens)
            page.balance -= self.cost
            page.settled += self.cost
            if self.reserved_day == page.day:
                meter = _meter(hold)
                page.day_spent[meter] = page.day_spent.get(meter, 0) + self.cost
            page._count_month_spend(hold, self.reserved_day, self.cost)
            if self.status == UNSETTLED:
                page.reconciled[self.request_id] = self.cost

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
        actor: ActorFields

        def apply(self, page: "LedgerPage") -> None:
            page.balance += self.amount
            page.adjusted += self.amount

    class Closed(Aggregate.Event):
        closing_balance: int
        carried_holds: dict[str, Hold]  # the month and windows go with the Opened

        def apply(self, page: "LedgerPage") -> None:
            page.closed = True

    # Version 2 (release 0.3): the per-meter maps. A snapshot of version 1 (0.2) has none, so
    # it gets them here, before any event is applied to the restored page. Version 3: the
    # per-key day maps are gone (the limits and every figure shown read the meter's), and the
    # page knows what the reconciler charged on the previous page (`reconciled_before`).
    class_version = 3

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Build the maps from a 0.2 page: its holds and spend were metered by key id.

        Idempotent (setdefault), so a snapshot taken by a 0.3 pre-release, which has the maps
        but no class_version, keeps them. The month-to-date spend starts with this page, as it
        does for a page opened before 0.3."""
        day, month = state["day"], state["day"][:7]
        day_held: dict[str, int] = {}
        held_month: dict[str, int] = {}
        open_holds: dict[str, int] = {}
        for hold in state["holds"].values():
            meter, amount = _meter(hold), hold["amount"]
            open_holds[meter] = open_holds.get(meter, 0) + 1
            if hold["day"] == day:
                day_held[meter] = day_held.get(meter, 0) + amount
            if hold["day"][:7] == month:
                held_month[meter] = held_month.get(meter, 0) + amount
        state.setdefault("day_held", day_held)
        state.setdefault("day_spent", dict(state["spent_today"]))
        state.setdefault("spent_month", dict(state["spent_today"]))
        state.setdefault("held_month", held_month)
        state.setdefault("open_holds", open_holds)
        state.setdefault("windows", {})
        state.setdefault("reconciled", {})

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """Drop the per-key day maps a page kept beside the per-meter ones until version 3
        (`held_today`, `spent_today`: nothing reads them; the meter's maps hold the same money),
        and start with no reconciled charges of the previous page (earlier pages carried none)."""
        state.pop("held_today", None)
        state.pop("spent_today", None)
        state.setdefault("reconciled_before", {})

    def __init__(
        self,
        account_id: UUID,
        day: str,
        opening_balance: int,
        carried_holds: dict[str, Hold],
        carried_month: dict[str, int] | None = None,
        carried_windows: dict[str, list[Bucket]] | None = None,
        carried_reconciled: dict[str, int] | None = None,
    ) -> None:
        self.account_id = account_id
        self.day = day
        self.opening_balance = opening_balance
        self.balance = opening_balance
        self.funded = 0
        self.settled = 0
        self.adjusted = 0
        self.holds: dict[str, Hold] = {k: v.copy() for k, v in carried_holds.items()}
        self.total_held: int = sum(h["amount"] for h in carried_holds.values())
        self.day_held: dict[str, int] = {}  # meter -> today's open holds (the daily limit's)
        self.day_spent: dict[str, int] = {}  # meter -> today's settled spend
        # meter -> this month's settled spend (earlier days' carried in), open holds of this
        # month, open holds of any day, and the trailing minute's buckets.
        self.spent_month: dict[str, int] = dict(carried_month or {})
        self.held_month: dict[str, int] = {}
        self.open_holds: dict[str, int] = {}
        self.windows: dict[str, list[Bucket]] = {
            meter: [list(b) for b in buckets] for meter, buckets in (carried_windows or {}).items()
        }
        for hold in self.holds.values():
            self._count_hold(_meter(hold), hold["day"], hold["amount"], +1)
        # request id -> what the reconciler charged, on this page and on the previous one: a
        # gateway's late settlement reports this, not a cost of its own (rare, so small). Kept
        # for one closing of the books, so a hold reconciled before midnight and settled late
        # after it still finds its charge (a late settlement comes within a request's deadline
        # of its reconciliation, far less than a day).
        self.reconciled: dict[str, int] = {}
        self.reconciled_before: dict[str, int] = dict(carried_reconciled or {})
        self.closed = False

    # Creating and closing pages ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        account_id: UUID,
        day: date,
        at: datetime,
        opening_balance: int = 0,
        carried_holds: dict[str, Hold] | None = None,
        carried_month: dict[str, int] | None = None,
        carried_windows: dict[str, list[Bucket]] | None = None,
        carried_reconciled: dict[str, int] | None = None,
    ) -> "LedgerPage":
        return cls._create(
            cls.Opened,
            id=page_id(account_id, day),
            account_id=account_id,
            day=day.isoformat(),
            opening_balance=opening_balance,
            carried_holds=carried_holds or {},
            carried_month=carried_month or {},
            carried_windows=carried_windows or {},
            carried_reconciled=carried_reconciled or {},
            timestamp=at,
        )

    def close_and_open(self, day: date, at: datetime) -> "LedgerPage":
        """Close the books on this page and open `day`'s page with its balance and open holds."""
        if day.isoformat() <= self.day:
            raise DomainError(f"cannot open page {day} after page {self.day}")
        self._check_open()
        carried = {k: v.copy() for k, v in self.holds.items()}
        self.trigger_event(
            self.Closed, closing_balance=self.balance, carried_holds=carried, timestamp=at
        )
        same_month = day.isoformat()[:7] == self.day[:7]
        month = {m: spent for m, spent in self.spent_month.items() if spent} if same_month else {}
        now_second = _second(at)
        windows = {m: _live(b, now_second) for m, b in self.windows.items()}
        return LedgerPage.open(
            self.account_id,
            day,
            at,
            self.balance,
            carried,
            carried_month=month,
            carried_windows={m: b for m, b in windows.items() if b},
            carried_reconciled=dict(self.reconciled),
        )

    # Reading ------------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return self.balance - self.total_held

    def day_spent_by(self, meter: str) -> int:
        return self.day_spent.get(meter, 0)

    def day_held_by(self, meter: str) -> int:
        return self.day_held.get(meter, 0)

    def month_spent_by(self, meter: str) -> int:
        return self.spent_month.get(meter, 0)

    def month_held_by(self, meter: str) -> int:
        return self.held_month.get(meter, 0)

    def reconciled_cost(self, request_id: str) -> int | None:
        """What the reconciler charged this request's hold, if it settled it on this page or
        the previous one."""
        charged = self.reconciled.get(request_id)
        return charged if charged is not None else self.reconciled_before.get(request_id)

    def in_flight(self, meter: str) -> int:
        return self.open_holds.get(meter, 0)

    def window(self, meter: str, now: datetime) -> tuple[int, int]:
        """(requests, tokens) of the meter in the trailing minute ending at `now`."""
        buckets = _live(self.windows.get(meter, []), _second(now))
        return sum(b[1] for b in buckets), sum(b[2] for b in buckets)

    def rate_status(self, meter: str, policy: KeyPolicy, now: datetime) -> RateStatus | None:
        """What the x-ratelimit-* headers say for a windowed key, now."""
        if not policy.windowed:
            return None
        now_second = _second(now)
        buckets = _live(self.windows.get(meter, []), now_second)
        requests, tokens = sum(b[1] for b in buckets), sum(b[2] for b in buckets)
        rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
        # As OpenAI's headers mean it: the time until the window is back to its full allowance.
        requests_reset = self._wait_for(buckets, now, requests, 1) if requests else 0.0
        tokens_reset = self._wait_for(buckets, now, tokens, 2) if tokens else 0.0
        return RateStatus(
            requests_limit=rpm,
            requests_remaining=max(0, rpm - requests) if rpm is not None else None,
            requests_reset=requests_reset,
            tokens_limit=tpm,
            tokens_remaining=max(0, tpm - tokens) if tpm is not None else None,
            tokens_reset=tokens_reset,
        )

    @staticmethod
    def _wait_for(buckets: list[Bucket], now: datetime, amount: int, index: int) -> float:
        """Seconds until at least `amount` of the window's requests (1) or tokens (2) have
        left it."""
        freed = 0
        for bucket in buckets:  # oldest first
            freed += bucket[index]
            if freed >= amount:
                leaves = datetime.fromtimestamp(bucket[0] + WINDOW_SECONDS, now.tzinfo)
                return max(0.0, (leaves - now).total_seconds())
        return float(WINDOW_SECONDS)

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
        *,
        policy: KeyPolicy = NO_POLICY,
        tokens: int = 0,
        meter: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Hold a request's maximum cost, or refuse it. Idempotent per request id.

        The refusals a retry cannot cure are checked first (daily and monthly limits, credits),
        then those a wait cures (concurrency, requests and tokens per minute). `tokens` is the
        request's token estimate (prompt bound + output cap) for `tokens_per_minute`."""
        self._check_open()
        if request_id in self.holds:
            return
        if amount < 0 or tokens < 0:
            raise InvalidAmount("a hold cannot be negative")
        meter = meter or key_id
        if daily_limit is not None:
            spent, held = self.day_spent_by(meter), self.day_held_by(meter)
            if spent + held + amount > daily_limit:
                raise DailyLimitExceeded(spent, held, daily_limit, amount)
        if policy.monthly_limit is not None:
            spent, held = self.month_spent_by(meter), self.month_held_by(meter)
            if spent + held + amount > policy.monthly_limit:
                raise MonthlyLimitExceeded(spent, held, policy.monthly_limit, amount)
        if self.available < amount:
            raise InsufficientCredits(self.balance, self.total_held, amount)
        self._check_rates(meter, policy, tokens, at)
        self.trigger_event(
            self.Reserved,
            request_id=request_id,
            key_id=key_id,
            model=model,
            amount=amount,
            meter=meter,
            tokens=tokens if policy.windowed else None,
            owner=owner,
            timestamp=at,
        )

    def _check_rates(self, meter: str, policy: KeyPolicy, tokens: int, at: datetime) -> None:
        if policy.max_concurrent is not None and self.in_flight(meter) >= policy.max_concurrent:
            raise ConcurrencyLimitExceeded(policy.max_concurrent)
        if not policy.windowed:
            return
        buckets = _live(self.windows.get(meter, []), _second(at))
        requests, used = sum(b[1] for b in buckets), sum(b[2] for b in buckets)
        rpm, tpm = policy.requests_per_minute, policy.tokens_per_minute
        if rpm is not None and requests + 1 > rpm:
            wait = self._wait_for(buckets, at, requests + 1 - rpm, 1)
            raise RateLimitExceeded("requests", rpm, requests, wait)
        if tpm is not None and used + tokens > tpm:
            if tokens > tpm:  # no wait lets one request this large through
                raise RateLimitExceeded("tokens", tpm, used, None)
            wait = self._wait_for(buckets, at, used + tokens - tpm, 2)
            raise RateLimitExceeded("tokens", tpm, used, wait)

    def settle(self, request_id: str, cost: int, at: datetime, usage: Usage) -> int | None:
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
        fields, bounding_flags = bounded_usage(usage.event_fields())
        flags = list(usage.flags)
        flags.extend(f for f in bounding_flags if f not in flags)
        unbilled = 0
        if cost > hold["amount"]:
            flags.append("over_hold")
            unbilled = min(cost - hold["amount"], MAX_UNBILLED)
            cost = hold["amount"]
        self.trigger_event(
            self.Settled,
            request_id=request_id,
            key_id=hold["key_id"],
            reserved_day=hold["day"],
            held=hold["amount"],
            cost=cost,
            flags=flags,
            unbilled=unbilled,
            timestamp=at,
            **fields,
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

    def _drop_hold(self, request_id: str, used_tokens: int = 0) -> Hold:
        """Close a hold; a windowed one's token estimate becomes what was used."""
        hold = self.holds.pop(request_id)
        self.total_held -= hold["amount"]
        meter = _meter(hold)
        if hold["day"] == self.day:
            self.day_held[meter] -= hold["amount"]
        self._count_hold(meter, hold["day"], hold["amount"], -1)
        estimate = hold.get("tokens")
        if estimate is not None:
            second = _second(datetime.fromisoformat(hold["at"]))
            for bucket in self.windows.get(meter, []):
                if bucket[0] == second:
                    bucket[2] += used_tokens - estimate
                    break
        return hold

    def _count_hold(self, meter: str, day: str, amount: int, sign: int) -> None:
        self.open_holds[meter] = self.open_holds.get(meter, 0) + sign
        if not self.open_holds[meter]:
            del self.open_holds[meter]
        if day[:7] == self.day[:7]:
            self.held_month[meter] = self.held_month.get(meter, 0) + sign * amount

    def _count_month_spend(self, hold: Hold, reserved_day: str, cost: int) -> None:
        if reserved_day[:7] == self.day[:7]:
            meter = _meter(hold)
            self.spent_month[meter] = self.spent_month.get(meter, 0) + cost

    def _window_add(self, meter: str, second: int, requests: int, tokens: int) -> None:
        buckets = _live(self.windows.get(meter, []), second)
        for bucket in buckets:
            if bucket[0] == second:
                bucket[1] += requests
                bucket[2] += tokens
                break
        else:
            buckets.append([second, requests, tokens])
            buckets.sort()  # another process's clock may be a little behind: keep oldest first
        self.windows[meter] = buckets


def meter_of(key_id: UUID | str, lineage_id: UUID | str | None) -> str:
    """What a key's limits are metered under: its rotation lineage (the id it was first issued
    as), or its own id when the lineage is not known (a rotation never raises a limit)."""
    return str(lineage_id or key_id)


def _meter(hold: Hold) -> str:
    return hold.get("meter") or hold["key_id"]

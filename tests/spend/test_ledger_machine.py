"""A Hypothesis state machine over the credit ledger, driven through SpendControl.

It reserves, settles (below, at and above the hold), releases, funds, retries settle/release
(idempotent), retries reserve, reads the account's view, and moves an injected clock within the
day, to its last second, and past one or more UTC midnights. A small model (balance, funded,
holds per request, spent per key per day) predicts every answer and every refusal. After every
step the store must agree with the model and with the invariants:

- for each key and UTC day, settled + held ≤ the key's daily limit;
- balance − held ≥ 0;
- funded (opening credits included) = current balance + everything settled, over all pages;
- every page but the newest ends with a Closed event whose balance and holds open the next one.

Replay: from time to time and at the end of every example, the current page is rebuilt from the
event store (a fresh Lowrouter on the same SQLite/PostgreSQL database, and a repository that
reads events only, ignoring snapshots) and must equal the writer's view.
"""

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import hypothesis
import pytest
from eventsourcing.application import Repository
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import application.spend as spend_module
from application.app import Lowrouter
from application.clock import next_midnight, utc_day
from application.spend import PageView, SpendControl
from domain.errors import DailyLimitExceeded, InsufficientCredits
from domain.ledger import LedgerPage, page_id
from domain.scope import Scope
from infrastructure.persistence import build_app, eventsourcing_env
from infrastructure.settings import Settings
from tests.support.runs import examples
from tests.support.spend import MODEL, OPERATOR, TIMEOUT, MutableClock, usage
from tests.support.stores import PEPPER

DAY_ZERO = datetime(2031, 3, 14, tzinfo=UTC)
# Keys of one account, by name, with their daily limits (micro-credits; None: no limit).
KEY_LIMITS: dict[str, int | None] = {"unlimited": None, "tight": 300, "roomy": 1_500, "frozen": 0}

MEMORY_RUNS = hypothesis.settings(
    max_examples=examples(100),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
STORE_RUNS = hypothesis.settings(
    max_examples=10,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def nonzero(figures: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in figures.items() if v}


# The model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    key_id: str
    amount: int
    day: str


@dataclass(frozen=True)
class Closed:
    """How a request's hold ended: settled (cost charged, flagged or not) or released."""

    key_id: str
    held: int
    day: str
    settled: bool
    cost: int = 0
    over_hold: bool = False


@dataclass
class Model:
    balance: int
    funded: int
    page_day: str
    limits: dict[str, int | None]  # key id -> daily limit
    pages: list[str] = field(default_factory=list)
    holds: dict[str, Hold] = field(default_factory=dict)
    closed: dict[str, Closed] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    spent: defaultdict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    settled: int = 0

    @property
    def total_held(self) -> int:
        return sum(h.amount for h in self.holds.values())

    @property
    def available(self) -> int:
        return self.balance - self.total_held

    def held_on(self, key_id: str, day: str) -> int:
        return sum(h.amount for h in self.holds.values() if h.key_id == key_id and h.day == day)

    def held_today(self) -> dict[str, int]:
        return nonzero({k: self.held_on(k, self.page_day) for k in self.limits})

    def spent_today(self) -> dict[str, int]:
        return nonzero({k: self.spent[(k, self.page_day)] for k in self.limits})

    def roll_over_to(self, day: str) -> None:
        if day > self.page_day:
            hypothesis.event("rolled over with holds open" if self.holds else "rolled over")
            self.page_day = day
            self.pages.append(day)

    def settle(self, request_id: str, charged: int, over_hold: bool) -> None:
        hold = self.holds.pop(request_id)
        self.balance -= charged
        self.settled += charged
        self.spent[(hold.key_id, hold.day)] += charged
        self.closed[request_id] = Closed(
            hold.key_id, hold.amount, hold.day, True, charged, over_hold
        )

    def release(self, request_id: str) -> None:
        hold = self.holds.pop(request_id)
        self.closed[request_id] = Closed(hold.key_id, hold.amount, hold.day, False)


# The store under test -------------------------------------------------------------------------


@dataclass
class Store:
    """The application every example writes to, and how to open a fresh one on the same store."""

    app: Lowrouter
    clock: MutableClock
    reopen: Callable[[], Lowrouter] | None  # None: in-memory, nothing to reopen
    snapshots_seen: int = 0


def page_of(account_id: UUID, day: str) -> UUID:
    return page_id(account_id, date.fromisoformat(day))


class LedgerMachine(RuleBasedStateMachine):
    store: Store  # set by the test that runs the machine

    def __init__(self) -> None:
        super().__init__()
        self.app = self.store.app
        self.clock = self.store.clock
        self.spend = SpendControl(self.app)
        self.account_id: UUID | None = None
        self.key_ids: dict[str, UUID] = {}
        self.model: Model | None = None
        self.requests = 0
        self.commands_since_replay = 0

    # Setting up ---------------------------------------------------------------------------

    @initialize(
        start=st.integers(min_value=0, max_value=86_399),
        credits=st.sampled_from([0, 500, 3_000]),
    )
    def open_account(self, start: int, credits: int) -> None:
        self.clock.now = DAY_ZERO + timedelta(seconds=start)
        opened = self.app.open_account(f"machine-{uuid.uuid4().hex}", OPERATOR, credits=credits)
        self.account_id = opened.account.id
        for name, limit in KEY_LIMITS.items():
            issued = self.app.create_key(self.account_id, name, Scope(daily_limit=limit), OPERATOR)
            assert issued.key.scope.daily_limit == limit
            self.key_ids[name] = issued.key.id
        day = utc_day(self.clock()).isoformat()
        self.model = Model(
            balance=credits,
            funded=credits,
            page_day=day,
            pages=[day],
            limits={str(self.key_ids[n]): limit for n, limit in KEY_LIMITS.items()},
        )

    def teardown(self) -> None:
        try:
            if self.model is not None:
                self.replay_on_a_fresh_application()
        finally:
            self.spend.close()

    # Helpers ------------------------------------------------------------------------------

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @property
    def account(self) -> UUID:
        assert self.account_id is not None
        return self.account_id

    def command_starts(self) -> None:
        """Any command on a new UTC day closes the books first (the writer rolls over)."""
        self.m.roll_over_to(utc_day(self.clock()).isoformat())
        self.commands_since_replay += 1

    def new_request_id(self) -> str:
        self.requests += 1
        return f"req-{self.requests}"

    def pick(self, ids: list[str], index: int) -> str:
        ordered = sorted(ids, key=lambda r: (len(r), r))
        return ordered[index % len(ordered)]

    def assert_view_matches_model(self, view: PageView) -> None:
        m = self.m
        assert view.day == m.page_day
        assert view.balance == m.balance
        assert view.held == m.total_held
        assert nonzero(view.day_spent) == m.spent_today()  # each key is its own meter here
        assert nonzero(view.day_held) == m.held_today()
        assert view.spent_today == sum(m.spent_today().values())  # the account's, all keys
        assert view.available == m.available >= 0

    def assert_page_matches_model(self, page: LedgerPage) -> None:
        m = self.m
        assert isinstance(page, LedgerPage)
        assert page.day == m.page_day
        assert not page.closed
        assert page.balance == m.balance
        assert page.total_held == m.total_held
        assert {rid: (h["key_id"], h["amount"], h["day"]) for rid, h in page.holds.items()} == {
            rid: (h.key_id, h.amount, h.day) for rid, h in m.holds.items()
        }
        assert nonzero(page.day_spent) == m.spent_today()
        assert nonzero(page.day_held) == m.held_today()

    # Money --------------------------------------------------------------------------------

    # Rules take one argument each (a tuple where they need several): Hypothesis favours rules
    # with fewer arguments, and the money rules should come up as often as one another.

    @rule(request=st.tuples(st.sampled_from(sorted(KEY_LIMITS)), st.integers(0, 800)))
    def reserve(self, request: tuple[str, int]) -> None:
        key, amount = request
        self.command_starts()
        m = self.m
        request_id = self.new_request_id()
        key_id = str(self.key_ids[key])
        limit = KEY_LIMITS[key]
        spent, held = m.spent[(key_id, m.page_day)], m.held_on(key_id, m.page_day)
        future = self.spend.reserve(
            self.account, request_id, self.key_ids[key], MODEL, amount, limit
        )
        if limit is not None and spent + held + amount > limit:
            with pytest.raises(DailyLimitExceeded) as over_limit:
                future.result(TIMEOUT)
            refusal = over_limit.value
            assert (refusal.spent, refusal.held, refusal.limit, refusal.needed) == (
                spent,
                held,
                limit,
                amount,
            )
            m.refused.append(request_id)
            hypothesis.event("reserve refused: daily limit")
        elif m.available < amount:
            with pytest.raises(InsufficientCredits) as too_poor:
                future.result(TIMEOUT)
            poor = too_poor.value
            assert (poor.balance, poor.held, poor.needed) == (m.balance, m.total_held, amount)
            m.refused.append(request_id)
            hypothesis.event("reserve refused: insufficient credits")
        else:
            assert future.result(TIMEOUT) == m.page_day
            m.holds[request_id] = Hold(key_id, amount, m.page_day)

    @precondition(lambda self: self.model is not None and self.model.holds)
    @rule(index=st.integers(min_value=0, max_value=1_000))
    def reserve_again_is_idempotent(self, index: int) -> None:
        """A retried reserve of an open hold holds nothing more, even past the limit."""
        self.command_starts()
        request_id = self.pick(list(self.m.holds), index)
        hold = self.m.holds[request_id]
        key_name = next(n for n, k in self.key_ids.items() if str(k) == hold.key_id)
        future = self.spend.reserve(
            self.account, request_id, UUID(hold.key_id), MODEL, hold.amount, KEY_LIMITS[key_name]
        )
        day = future.result(TIMEOUT)
        if hold.day == self.m.page_day:  # (a hold carried past midnight: test_day_rollover.py)
            assert day == hold.day

    @precondition(lambda self: self.model is not None and self.model.holds)
    @rule(
        how=st.tuples(
            st.integers(min_value=0, max_value=1_000),
            st.sampled_from(["cost below hold", "cost = hold", "cost above hold", "release"]),
            st.integers(min_value=1, max_value=300),
        )
    )
    def settle_or_release(self, how: tuple[int, str, int]) -> None:
        """Charge the real cost (capped at the hold, flagged over_hold above it), or release."""
        index, outcome, delta = how
        self.command_starts()
        m = self.m
        request_id = self.pick(list(m.holds), index)
        hold = m.holds[request_id]
        if hold.day != m.page_day:
            hypothesis.event(f"{outcome}: a hold reserved on an earlier day")
        if outcome == "release":
            assert self.spend.release(self.account, request_id, "upstream_error").result(TIMEOUT)
            m.release(request_id)
            return
        cost = {
            "cost below hold": max(hold.amount - delta, 0),
            "cost = hold": hold.amount,
            "cost above hold": hold.amount + delta,
        }[outcome]
        charged = self.spend.settle(self.account, request_id, cost, usage()).result(TIMEOUT)
        assert charged == min(cost, hold.amount)  # never above the hold
        m.settle(request_id, charged, over_hold=cost > hold.amount)

    @precondition(lambda self: self.model is not None and (self.model.closed or self.model.refused))
    @rule(
        how=st.tuples(
            st.integers(min_value=0, max_value=1_000),
            st.sampled_from(["settle", "release"]),
            st.integers(min_value=0, max_value=900),
        )
    )
    def settle_or_release_again_changes_nothing(self, how: tuple[int, str, int]) -> None:
        """Settling twice charges once; releasing twice (or after settling) frees nothing;
        a refused (or unknown) request held nothing, so there is nothing to charge or free."""
        index, again, cost = how
        self.command_starts()
        request_id = self.pick([*self.m.closed, *self.m.refused, "req-never"], index)
        if again == "settle":
            future = self.spend.settle(self.account, request_id, cost, usage())
            assert future.result(TIMEOUT) is None
        else:
            assert self.spend.release(self.account, request_id, "again").result(TIMEOUT) is False

    @rule(amount=st.integers(min_value=1, max_value=2_000))
    def top_up(self, amount: int) -> None:
        self.command_starts()
        assert self.spend.fund(self.account, amount, OPERATOR).result(TIMEOUT) is None
        self.m.balance += amount
        self.m.funded += amount

    # Time ---------------------------------------------------------------------------------

    @rule(
        move=st.tuples(
            st.sampled_from(["seconds", "last second", "past midnight"]),
            st.integers(min_value=1, max_value=6 * 3600),
            st.integers(min_value=1, max_value=3),
        )
    )
    def time_passes(self, move: tuple[str, int, int]) -> None:
        """Some seconds or hours; to 23:59:59 UTC; or past the next (or a later) midnight."""
        how, seconds, days = move
        now = self.clock.now
        if how == "seconds":
            self.clock.now = now + timedelta(seconds=seconds)
        elif how == "last second":
            self.clock.now = max(now, next_midnight(now) - timedelta(seconds=1))
        else:  # days > 1: the account sat idle for a while
            self.clock.now = next_midnight(now) + timedelta(days=days - 1, seconds=seconds % 3600)

    # Replay -------------------------------------------------------------------------------

    @precondition(lambda self: self.commands_since_replay >= 5)
    @rule()
    def replay_on_a_fresh_application(self) -> None:
        """Rebuild the current page from the event store; it must equal the writer's view."""
        self.command_starts()
        self.commands_since_replay = 0
        # Reads never write, so close the books of a past day with a write that moves nothing.
        assert (
            self.spend.release(self.account, "no-such-request", "replay").result(TIMEOUT) is False
        )
        view = self.spend.view(self.account).result(TIMEOUT)
        self.assert_view_matches_model(view)
        current = page_of(self.account, self.m.page_day)
        rebuilt = [Repository(self.app.events).get(current)]  # events only, no snapshot
        if self.app.snapshots is not None and list(self.app.snapshots.get(current)):
            self.store.snapshots_seen += 1
        if self.store.reopen is not None:
            fresh = self.store.reopen()
            try:
                rebuilt.append(fresh.repository.get(current))  # snapshot (if any) + tail
                rebuilt.append(Repository(fresh.events).get(current))
            finally:
                fresh.close()
        else:
            rebuilt.append(self.app.repository.get(current))  # snapshot (if any) + tail
        for page in rebuilt:
            self.assert_page_matches_model(page)
            assert (page.day, page.balance, page.total_held) == (view.day, view.balance, view.held)
            assert nonzero(page.day_spent) == nonzero(view.day_spent)
            assert nonzero(page.day_held) == nonzero(view.day_held)

    # Invariants ---------------------------------------------------------------------------

    @invariant()
    def current_page_keeps_the_promises_and_equals_the_model(self) -> None:
        if self.model is None:
            return
        page = self.app.repository.get(page_of(self.account, self.m.page_day))
        self.assert_page_matches_model(page)
        assert page.balance - page.total_held >= 0
        for key_id, limit in self.m.limits.items():
            if limit is not None:
                assert page.day_spent_by(key_id) + page.day_held_by(key_id) <= limit

    @invariant()
    def books_balance_across_every_page(self) -> None:
        """funded = balance + settled; per key and day settled + held ≤ limit; pages chain."""
        if self.model is None:
            return
        m = self.m
        funded = settled = 0
        settled_by_key_day: defaultdict[tuple[str, str], int] = defaultdict(int)
        endings: Counter[str] = Counter()
        previous_close: LedgerPage.Closed | None = None
        for number, day in enumerate(m.pages):
            events = list(self.app.events.get(page_of(self.account, day)))
            opened = events[0]
            assert isinstance(opened, LedgerPage.Opened)
            assert opened.day == day
            if previous_close is None:
                assert (opened.opening_balance, opened.carried_holds) == (0, {})
            else:
                assert opened.opening_balance == previous_close.closing_balance
                assert opened.carried_holds == previous_close.carried_holds
            closes = [e for e in events if isinstance(e, LedgerPage.Closed)]
            if number < len(m.pages) - 1:
                assert closes == [events[-1]], f"page {day} must end with one Closed event"
                previous_close = closes[0]
            else:
                assert closes == [], "the current page is open"
            for event in events:
                if isinstance(event, LedgerPage.Funded):
                    funded += event.amount
                elif isinstance(event, LedgerPage.Settled):
                    settled += event.cost
                    settled_by_key_day[(event.key_id, event.reserved_day)] += event.cost
                    endings[event.request_id] += 1
                    expected = m.closed[event.request_id]
                    assert expected.settled
                    assert (event.key_id, event.held, event.reserved_day) == (
                        expected.key_id,
                        expected.held,
                        expected.day,
                    )
                    assert event.cost == expected.cost <= event.held
                    assert ("over_hold" in event.flags) == expected.over_hold
                elif isinstance(event, LedgerPage.Released):
                    endings[event.request_id] += 1
                    assert not m.closed[event.request_id].settled
        balance = self.app.repository.get(page_of(self.account, m.page_day)).balance
        assert funded == m.funded
        assert funded == balance + settled
        assert settled == m.settled
        assert set(endings) == set(m.closed)
        assert set(endings.values()) <= {1}, "a hold is settled or released exactly once"
        for (key_id, day), cost in settled_by_key_day.items():
            limit = m.limits[key_id]
            if limit is not None:
                assert cost + m.held_on(key_id, day) <= limit
            assert cost == m.spent[(key_id, day)]


def run_machine(name: str, store: Store, runs: hypothesis.settings) -> None:
    machine = type(f"LedgerMachine{name}", (LedgerMachine,), {"store": store})
    run_state_machine_as_test(machine, settings=runs)


def test_ledger_machine_on_the_in_memory_store() -> None:
    clock = MutableClock(DAY_ZERO)
    app = Lowrouter(eventsourcing_env("memory://"), pepper=PEPPER.encode(), clock=clock)
    try:
        run_machine("InMemory", Store(app, clock, reopen=None), MEMORY_RUNS)
    finally:
        app.close()


def test_ledger_machine_replays_hot_pages_from_snapshot_and_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Snapshots forced on, taken every few events: snapshot + tail must equal the events."""
    monkeypatch.setattr(spend_module, "SNAPSHOT_EVERY", 4)
    clock = MutableClock(DAY_ZERO)
    env = eventsourcing_env("memory://") | {"IS_SNAPSHOTTING_ENABLED": "y"}
    app = Lowrouter(env, pepper=PEPPER.encode(), clock=clock)
    store = Store(app, clock, reopen=None)
    try:
        run_machine("WithSnapshots", store, hypothesis.settings(MEMORY_RUNS, max_examples=60))
    finally:
        app.close()
    assert store.snapshots_seen > 0, "no example replayed a page from a snapshot"


def test_ledger_machine_replayed_from_the_database(settings: Settings) -> None:
    clock = MutableClock(DAY_ZERO)
    app = build_app(settings, clock)
    try:
        store = Store(app, clock, reopen=lambda: build_app(settings, clock))
        run_machine("OnTheDatabase", store, STORE_RUNS)
    finally:
        app.close()


def test_a_hot_ledger_page_is_snapshotted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production wiring (build_app) has a snapshot store, and the writer uses it.

    Regression: Lowrouter.construct_env once replaced the library's env and dropped the
    IS_SNAPSHOTTING_ENABLED=y that `is_snapshotting_enabled = True` asks for, so app.snapshots
    was None and SpendControl silently never snapshotted a hot page.
    """
    monkeypatch.setattr(spend_module, "SNAPSHOT_EVERY", 5)
    clock = MutableClock(DAY_ZERO + timedelta(hours=12))
    app = build_app(settings, clock)
    spend = SpendControl(app)
    try:
        account = app.open_account(f"hot-{uuid.uuid4().hex}", OPERATOR, credits=1).account
        for _ in range(12):
            spend.fund(account.id, 1, OPERATOR).result(TIMEOUT)
        assert app.snapshots is not None, "the application has no snapshot store"
        snapshots = list(app.snapshots.get(page_of(account.id, "2031-03-14")))
        assert snapshots and snapshots[-1].originator_version >= 5
        fresh = build_app(settings, clock)
        try:
            current = page_of(account.id, "2031-03-14")
            assert fresh.repository.get(current).balance == 13  # snapshot + tail
            assert Repository(fresh.events).get(current).balance == 13  # every event
        finally:
            fresh.close()
    finally:
        spend.close()
        app.close()

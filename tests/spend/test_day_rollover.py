"""Day rollover with an injectable clock: daily limits reset at 00:00 UTC, a request that straddles
midnight is charged to the day it was reserved in, and each day's page closes its books into the
next (read back from the store, on SQLite and on PostgreSQL)."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import AggregateNotFoundError
from hypothesis import given
from hypothesis import strategies as st

from application.app import Lowrouter
from application.clock import next_midnight, utc_day
from application.spend import SpendControl
from domain.errors import DailyLimitExceeded
from domain.ledger import LedgerPage, page_id
from domain.scope import Scope
from infrastructure.persistence import build_app
from infrastructure.settings import Settings
from tests.support.spend import OPERATOR, TIMEOUT, MutableClock, usage

D = date(2031, 3, 14)
D_PLUS_1 = D + timedelta(days=1)
LIMIT = 1_000


def at(day: date, hour: int, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second, micro), tzinfo=UTC)


@dataclass
class Ledger:
    """A Lowrouter app and its spend writer on the test's store, under a hand-moved clock."""

    settings: Settings
    clock: MutableClock
    app: Lowrouter
    spend: SpendControl

    def open_account(self, credits: int) -> UUID:
        name = f"rollover-{uuid4().hex}"
        return self.app.open_account(name, OPERATOR, credits=credits).account.id

    def create_key(self, account_id: UUID, limit: int | None = LIMIT) -> UUID:
        scope = Scope(daily_limit=limit)
        return self.app.create_key(account_id, "k", scope, OPERATOR).key.id

    def reserve(self, account_id: UUID, request_id: str, key_id: UUID, amount: int) -> str:
        future = self.spend.reserve(account_id, request_id, key_id, "test/model", amount, LIMIT)
        return future.result(TIMEOUT)

    def settle(self, account_id: UUID, request_id: str, cost: int) -> int | None:
        return self.spend.settle(account_id, request_id, cost, usage()).result(TIMEOUT)

    def fresh_app(self) -> Lowrouter:
        """Another application on the same store: it can only know what was stored."""
        return build_app(self.settings, self.clock)


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    clock = MutableClock(at(D, 10))
    app = build_app(settings, clock)
    spend = SpendControl(app)
    yield Ledger(settings, clock, app, spend)
    spend.close()
    app.close()


def stored_events(app: Lowrouter, account_id: UUID, day: date) -> list[object]:
    return list(app.events.get(page_id(account_id, day)))


def test_key_at_its_daily_limit_is_refused_until_the_next_midnight_utc(ledger: Ledger) -> None:
    account = ledger.open_account(credits=10_000)
    key = ledger.create_key(account)
    assert ledger.reserve(account, "r1", key, 600) == D.isoformat()
    assert ledger.settle(account, "r1", 600) == 600
    assert ledger.reserve(account, "r2", key, 400) == D.isoformat()
    assert ledger.settle(account, "r2", 400) == 400

    refused_at = ledger.clock.now
    with pytest.raises(DailyLimitExceeded) as refusal:
        ledger.reserve(account, "r3", key, 1)
    assert (refusal.value.spent, refusal.value.held, refusal.value.limit) == (1_000, 0, LIMIT)
    reset = next_midnight(refused_at)
    assert reset == at(D_PLUS_1, 0)

    ledger.clock.now = reset - timedelta(microseconds=1)  # 23:59:59.999999 on D: still D
    with pytest.raises(DailyLimitExceeded):
        ledger.reserve(account, "r4", key, 1)

    ledger.clock.now = reset  # 00:00:00 UTC: a new day, a new limit
    assert ledger.reserve(account, "r5", key, LIMIT) == D_PLUS_1.isoformat()
    view = ledger.spend.view(account).result(TIMEOUT)
    assert (view.day, view.day_spent, view.day_held) == (
        D_PLUS_1.isoformat(),
        {},
        {str(key): LIMIT},
    )
    assert view.balance == 10_000 - 1_000
    with pytest.raises(DailyLimitExceeded) as again:
        ledger.reserve(account, "r6", key, 1)
    assert (again.value.spent, again.value.held) == (0, LIMIT)


def test_hold_reserved_at_23_59_59_and_settled_after_midnight_is_charged_to_its_day(
    ledger: Ledger,
) -> None:
    account = ledger.open_account(credits=10_000)
    key = ledger.create_key(account)
    ledger.clock.now = at(D, 23, 59, 59)
    assert ledger.reserve(account, "straddler", key, 800) == D.isoformat()
    with pytest.raises(DailyLimitExceeded):  # the hold counts against D
        ledger.reserve(account, "too-much-on-d", key, 300)

    ledger.clock.now = at(D_PLUS_1, 0, 0, 5)
    assert ledger.settle(account, "straddler", 700) == 700

    view = ledger.spend.view(account).result(TIMEOUT)
    assert view.day == D_PLUS_1.isoformat()
    assert (view.balance, view.held) == (10_000 - 700, 0)  # the balance reflects the charge
    assert view.day_spent == {} and view.spent_today == 0  # not D+1's spend
    assert ledger.reserve(account, "fresh-on-d1", key, LIMIT) == D_PLUS_1.isoformat()

    fresh = ledger.fresh_app()
    try:
        settled = [
            e for e in stored_events(fresh, account, D_PLUS_1) if isinstance(e, LedgerPage.Settled)
        ]
        assert [(e.request_id, e.reserved_day, e.held, e.cost) for e in settled] == [
            ("straddler", D.isoformat(), 800, 700)
        ]
        page = fresh.repository.get(page_id(account, D_PLUS_1))
        assert page.day_spent_by(str(key)) == 0
        assert page.day_held_by(str(key)) == LIMIT
        assert page.balance == 10_000 - 700
    finally:
        fresh.close()


def test_closed_day_carries_its_balance_and_open_holds_into_the_next_page(
    ledger: Ledger,
) -> None:
    ledger.clock.now = at(D, 9)
    account = ledger.open_account(credits=5_000)
    k1, k2 = ledger.create_key(account), ledger.create_key(account)
    ledger.spend.fund(account, 1_000, OPERATOR).result(TIMEOUT)
    ledger.reserve(account, "a", k1, 300)
    ledger.reserve(account, "b", k2, 200)
    assert ledger.settle(account, "a", 250) == 250

    rolled_at = at(D_PLUS_1, 0, 0, 1)
    ledger.clock.now = rolled_at
    # Looking at the figures shows the new day but writes nothing: reads never append events.
    assert ledger.spend.view(account).result(TIMEOUT).day == D_PLUS_1.isoformat()
    reader = ledger.fresh_app()
    try:
        assert not [e for e in stored_events(reader, account, D) if type(e).__name__ == "Closed"]
    finally:
        reader.close()
    # The next write closes the books (a release of nothing moves no money).
    assert ledger.spend.release(account, "nothing-held", "test").result(TIMEOUT) is False

    open_hold = {
        "key_id": str(k2),
        "amount": 200,
        "day": D.isoformat(),
        "model": "test/model",
        "at": at(D, 9).isoformat(),
    }
    fresh = ledger.fresh_app()
    try:
        d_events = stored_events(fresh, account, D)
        closed = d_events[-1]
        assert isinstance(closed, LedgerPage.Closed)
        assert [type(e).__name__ for e in d_events].count("Closed") == 1
        assert closed.closing_balance == 5_000 + 1_000 - 250
        assert closed.carried_holds == {"b": open_hold}
        assert closed.timestamp == rolled_at
        d_page = fresh.repository.get(page_id(account, D))
        assert d_page.closed
        assert d_page.balance == 5_750

        opened = stored_events(fresh, account, D_PLUS_1)[0]
        assert isinstance(opened, LedgerPage.Opened)
        assert (opened.day, opened.opening_balance) == (D_PLUS_1.isoformat(), 5_750)
        assert opened.carried_holds == {"b": open_hold}
        next_page = fresh.repository.get(page_id(account, D_PLUS_1))
        assert not next_page.closed
        assert (next_page.balance, next_page.total_held, next_page.available) == (5_750, 200, 5_550)
        assert next_page.holds == {"b": open_hold}
        assert next_page.day_held == {}  # D's hold does not count against D+1's limits
    finally:
        fresh.close()

    assert ledger.settle(account, "b", 200) == 200  # settles on D+1, charged to D
    view = ledger.spend.view(account).result(TIMEOUT)
    assert (view.balance, view.held) == (5_550, 0)


@pytest.mark.parametrize("writer", ["same writer", "restarted writer"])
def test_idle_account_rolls_over_to_todays_page(ledger: Ledger, writer: str) -> None:
    ledger.clock.now = at(D, 12)
    account = ledger.open_account(credits=3_000)
    key = ledger.create_key(account)
    ledger.reserve(account, "before-the-quiet", key, 500)

    today = D + timedelta(days=5)
    ledger.clock.now = at(today, 8, 30)
    spend, app = ledger.spend, None
    if writer == "restarted writer":  # an empty cache: it must find the last page in the store
        app = ledger.fresh_app()
        spend = SpendControl(app)
    try:
        view = spend.view(account).result(TIMEOUT)
        assert view.day == today.isoformat()
        assert (view.balance, view.held, view.day_held, view.day_spent) == (3_000, 500, {}, {})
        day_limit_resets = spend.reserve(account, "today", key, "test/model", LIMIT, LIMIT)
        assert day_limit_resets.result(TIMEOUT) == today.isoformat()
        charged = spend.settle(account, "before-the-quiet", 400, usage()).result(TIMEOUT)
        assert charged == 400
        view = spend.view(account).result(TIMEOUT)
        assert (view.balance, view.held, view.day_spent) == (2_600, LIMIT, {})
    finally:
        if app is not None:
            spend.close()
            app.close()

    fresh = ledger.fresh_app()
    try:
        for quiet_day in (D + timedelta(days=n) for n in range(1, 5)):
            with pytest.raises(AggregateNotFoundError):
                fresh.repository.get(page_id(account, quiet_day))
        closed = stored_events(fresh, account, D)[-1]
        assert isinstance(closed, LedgerPage.Closed)
        assert (closed.closing_balance, list(closed.carried_holds)) == (3_000, ["before-the-quiet"])
        opened = stored_events(fresh, account, today)[0]
        assert isinstance(opened, LedgerPage.Opened)
        assert opened.opening_balance == 3_000
        assert opened.carried_holds == closed.carried_holds
        page = fresh.repository.get(page_id(account, today))
        assert (page.balance, page.total_held, page.day_spent_by(str(key))) == (2_600, LIMIT, 0)
    finally:
        fresh.close()


OFFSETS = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))]


@given(
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from(OFFSETS),
    )
)
def test_next_midnight_is_the_next_0000_utc(moment: datetime) -> None:
    reset = next_midnight(moment)
    assert reset.utcoffset() == timedelta(0)
    assert reset.timetz().replace(tzinfo=None) == time(0)
    assert moment < reset <= moment + timedelta(days=1)
    assert utc_day(reset) == utc_day(moment) + timedelta(days=1)
    assert utc_day(reset - timedelta(microseconds=1)) == utc_day(moment)


def test_next_midnight_counts_in_utc_not_the_callers_zone() -> None:
    evening_in_new_york = datetime(2031, 3, 14, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert next_midnight(evening_in_new_york) == at(date(2031, 3, 16), 0)
    assert next_midnight(at(D, 0)) == at(D_PLUS_1, 0)  # at 00:00 the next reset is a day away


def test_retried_reserve_after_midnight_resolves_to_the_day_the_hold_is_charged_to(
    ledger: Ledger,
) -> None:
    account = ledger.open_account(credits=10_000)
    key = ledger.create_key(account)
    ledger.clock.now = at(D, 23, 59, 59)
    assert ledger.reserve(account, "retried", key, 500) == D.isoformat()
    ledger.clock.now = at(D_PLUS_1, 0, 0, 1)
    assert ledger.reserve(account, "retried", key, 500) == D.isoformat()

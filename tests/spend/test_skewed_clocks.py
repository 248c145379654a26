"""Hosts whose clocks disagree (injected clocks): around midnight the first host past it rolls
the account over, and a host still before it writes on the new page instead of being refused;
holds carried across midnight keep their day; the reconciler leaves a live gateway's holds alone
whatever its own clock says (within the backstop), and settles a dead one's."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from application.reconcile import reconcile
from application.spend import SpendControl
from domain.ledger import LedgerPage, page_id
from domain.scope import Scope
from infrastructure.liveness import ProcessLease, live_processes
from infrastructure.persistence import build_app
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings
from projections.queries.holds import stale_holds
from tests.support.spend import OPERATOR, TIMEOUT, MutableClock, usage

D = date(2031, 3, 14)


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=UTC)


@pytest.fixture
def two_hosts(
    settings: Settings,
) -> Iterator[tuple[MutableClock, SpendControl, MutableClock, SpendControl]]:
    """Two writers on one store: `ahead` is 5 s ahead of `behind`."""
    behind_clock, ahead_clock = MutableClock(at(D, 23, 59, 50)), MutableClock(at(D, 23, 59, 55))
    apps = [build_app(settings, behind_clock), build_app(settings, ahead_clock)]
    spends = [SpendControl(app) for app in apps]
    yield behind_clock, spends[0], ahead_clock, spends[1]
    for spend in spends:
        spend.close()
    for app in apps:
        app.close()


def test_a_host_behind_midnight_writes_on_the_page_a_host_past_it_opened(
    two_hosts: tuple[MutableClock, SpendControl, MutableClock, SpendControl],
) -> None:
    behind_clock, behind, ahead_clock, ahead = two_hosts
    app = behind.app
    account = app.open_account("skew", OPERATOR, credits=10_000).account.id
    key = app.create_key(account, "k", Scope(), OPERATOR).key.id
    # Reserved at 23:59:50 (on D), by the host behind.
    assert behind.reserve(account, "carried", key, "m", 500, None).result(TIMEOUT) == D.isoformat()

    ahead_clock.now = at(D + timedelta(days=1), 0, 0, 2)  # past midnight: it closes the books
    assert (
        ahead.reserve(account, "after", key, "m", 100, None).result(TIMEOUT)
        == (D + timedelta(days=1)).isoformat()
    )

    behind_clock.now = at(D, 23, 59, 57)  # still D by its clock: its "today" is closed
    assert (
        behind.reserve(account, "late", key, "m", 100, None).result(TIMEOUT)
        == (D + timedelta(days=1)).isoformat()
    )  # written on the open page, not refused
    # The hold carried across midnight settles on the new page, charged to its own day.
    assert behind.settle(account, "carried", 300, usage()).result(TIMEOUT) == 300
    page = app.repository.get(page_id(account, D + timedelta(days=1)))
    assert isinstance(page, LedgerPage)
    assert page.balance == 10_000 - 300
    assert set(page.holds) == {"after", "late"} and page.total_held == 200
    closed = app.repository.get(page_id(account, D))
    assert isinstance(closed, LedgerPage) and closed.closed and "carried" in closed.holds
    assert ahead.view(account).result(TIMEOUT).balance == 10_000 - 300


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = open_runtime(replace(settings, hold_timeout_seconds=60, max_request_seconds=900))
    yield runtime
    runtime.close()


@pytest.mark.parametrize(("skew_minutes", "settled_now"), [(-30, 0), (5, 1), (12, 1), (30, 2)])
def test_the_reconciler_judges_owners_by_their_lease_not_by_its_own_clock(
    runtime: Runtime, skew_minutes: int, settled_now: int
) -> None:
    """The reconciler's clock is `skew_minutes` off, two minutes after the holds (timeout
    1 min, backstop 16 min): behind, nothing looks stale yet (settled later, never early);
    ahead, only the dead gateway's hold is settled — unless the skew passes the backstop."""
    account = runtime.app.open_account("skewed", OPERATOR, credits=10**6).account.id
    key = runtime.app.create_key(account, "k", Scope(), OPERATOR).key.id
    live = ProcessLease(runtime.engine, ttl_seconds=30)
    assert live.renew()
    runtime.spend.owner = live.process_id
    runtime.spend.admit(account, "live", key, "m", 1000, None).result(TIMEOUT)
    runtime.spend.owner = "a-host:1:dead"  # a gateway that never renewed a lease: gone
    runtime.spend.admit(account, "dead", key, "m", 1000, None).result(TIMEOUT)
    runtime.projections.catch_up(["usage"])

    reconciler_now = datetime.now(UTC) + timedelta(minutes=skew_minutes) + timedelta(minutes=2)
    settle = runtime.spend
    settings = runtime.settings
    settled = reconcile(
        replace_clock(runtime, reconciler_now),
        settle,
        lambda before: stale_holds.run(runtime.engine, before),
        timedelta(seconds=settings.hold_timeout_seconds),
        live_owners=lambda owners: live_processes(runtime.engine, owners),
        backstop=timedelta(seconds=settings.hold_timeout_seconds + settings.max_request_seconds),
    )
    view = runtime.spend.view(account).result(TIMEOUT)
    assert settled == settled_now and view.held == 2000 - 1000 * settled_now


def replace_clock(runtime: Runtime, now: datetime):  # type: ignore[no-untyped-def]
    """The ledger application as seen by a host whose clock reads `now`."""

    class Skewed:
        def __init__(self) -> None:
            self.clock = lambda: now

        def get_key(self, key_id):  # type: ignore[no-untyped-def]
            return runtime.app.get_key(key_id)

    return Skewed()

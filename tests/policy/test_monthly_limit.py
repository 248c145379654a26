"""The monthly limit on the store, under an injected clock: it carries across a midnight (the
month-to-date spend moves with the closing balance) and resets at the first of the next month,
read back by a fresh application that knows only what was stored (SQLite and PostgreSQL)."""

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from application.spend import SpendControl
from domain.errors import MonthlyLimitExceeded
from domain.policy import KeyPolicy
from domain.scope import Scope
from infrastructure.persistence import build_app
from infrastructure.settings import Settings
from tests.support.spend import OPERATOR, TIMEOUT, MutableClock, usage

POLICY = KeyPolicy(monthly_limit=1_000)


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock(datetime(2031, 1, 30, 22, 0, tzinfo=UTC))


@pytest.fixture
def spend(settings: Settings, clock: MutableClock) -> Iterator[SpendControl]:
    app = build_app(settings, clock)
    control = SpendControl(app)
    yield control
    control.close()
    app.close()


def test_the_monthly_limit_carries_over_midnight_and_resets_with_the_month(
    settings: Settings, clock: MutableClock, spend: SpendControl
) -> None:
    app = spend.app
    account = app.open_account(f"m-{uuid4().hex}", OPERATOR, credits=10**6).account.id
    key = app.create_key(account, "k", Scope(), OPERATOR, POLICY).key.id

    def admit(request: str, amount: int) -> None:
        spend.admit(account, request, key, "m", amount, None, policy=POLICY).result(TIMEOUT)

    admit("a", 600)
    spend.settle(account, "a", 600, usage()).result(TIMEOUT)
    clock.now = datetime(2031, 1, 31, 0, 0, 5, tzinfo=UTC)  # past midnight: a new daily page
    with pytest.raises(MonthlyLimitExceeded) as refused:
        admit("b", 401)
    assert (refused.value.spent, refused.value.limit) == (600, 1_000)
    admit("b", 400)  # exactly to the limit
    # A fresh application (and writer) on the same store sees the same month-to-date figure.
    fresh_app = build_app(settings, clock)
    fresh = SpendControl(fresh_app)
    try:
        with pytest.raises(MonthlyLimitExceeded):
            fresh.admit(account, "c", key, "m", 1, None, policy=POLICY).result(TIMEOUT)
        clock.now = datetime(2031, 2, 1, 0, 0, 1, tzinfo=UTC)  # a new month, a whole new limit
        fresh.admit(account, "c", key, "m", 1_000, None, policy=POLICY).result(TIMEOUT)
        view = fresh.view(account).result(TIMEOUT)
        assert view.day == "2031-02-01"
        assert view.spent_month.get(str(key), 0) == 0 and view.held_month[str(key)] == 1_000
    finally:
        fresh.close()
        fresh_app.close()

"""verify-balances as a use case (application.verification) on eventsourcing's in-memory store:
the books recomputed from the log are compared with whatever the read-model port says, and
every figure that disagrees is named. The SQL side (projections.queries.forensics.recorded_money) is
covered end to end in tests/audit/test_replay.py and tests/cli/test_audit_cli.py."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import pytest

from application.app import Lowrouter
from application.spend import SpendControl
from application.verification import Figures, verify_balances
from domain.scope import Scope
from infrastructure.persistence import eventsourcing_env
from tests.support.spend import OPERATOR, TIMEOUT, MutableClock, usage

NOW = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
DAY = "2031-03-14"


@dataclass(frozen=True)
class Recorded:
    """The read-model port's answer, as a test states it."""

    position: int
    figures: dict[str, Figures]


@dataclass
class Books:
    app: Lowrouter
    spend: SpendControl
    account: UUID
    key: UUID


@pytest.fixture
def books() -> Iterator[Books]:
    """An account funded 1000, one key that settled 150 of a 400 hold, and a hold of 200 open."""
    app = Lowrouter(eventsourcing_env("memory://"), pepper=b"pepper", clock=MutableClock(NOW))
    spend = SpendControl(app)
    account = app.open_account("acme", OPERATOR, credits=1_000).account.id
    key = app.create_key(account, "k", Scope(), OPERATOR).key.id
    spend.reserve(account, "r1", key, "m", 400, None).result(TIMEOUT)
    spend.settle(account, "r1", 150, usage()).result(TIMEOUT)
    spend.reserve(account, "r2", key, "m", 200, None).result(TIMEOUT)
    yield Books(app, spend, account, key)
    spend.close()
    app.close()


def truth(b: Books) -> dict[str, Figures]:
    spent = {(str(b.account), str(b.key), DAY): (150, 1)}
    return {
        "lr_daily_spend": spent,
        "lr_usage": dict(spent),
        "lr_holds": {(str(b.account), None, None): (200, 1)},
    }


def head(app: Lowrouter) -> int:
    return app.recorder.max_notification_id() or 0


def test_read_models_that_agree_with_the_events_pass(books: Books) -> None:
    check = verify_balances(books.app, lambda: Recorded(head(books.app), truth(books)))
    assert check.ok and check.differences == [] and check.problems == []
    [account] = check.accounts
    assert (account.account_id, account.name, account.balance, account.held) == (
        books.account,
        "acme",
        850,
        200,
    )
    assert (account.key_days, account.differences) == (1, 0)


def test_each_figure_that_disagrees_is_named(books: Books) -> None:
    wrong = truth(books)
    wrong["lr_daily_spend"] = {(str(books.account), str(books.key), DAY): (149, 1)}
    wrong["lr_holds"] = {}
    check = verify_balances(books.app, lambda: Recorded(head(books.app), wrong))
    assert not check.ok
    named = {(d.what, d.key_id, d.from_events, d.recorded) for d in check.differences}
    assert named == {
        (
            "daily spend (lr_daily_spend)",
            str(books.key),
            "0.000150 in 1 requests",
            "0.000149 in 1 requests",
        ),
        ("open holds (lr_holds)", None, "0.000200 in 1 holds", "(none)"),
    }
    assert check.accounts[0].differences == 2


def test_the_log_is_read_only_up_to_where_the_read_models_stand(books: Books) -> None:
    position = head(books.app)
    books.spend.fund(books.account, 1, OPERATOR).result(TIMEOUT)  # after the read models' read
    books.spend.settle(books.account, "r2", 50, usage()).result(TIMEOUT)
    check = verify_balances(books.app, lambda: Recorded(position, truth(books)))
    assert check.ok and check.position == position
    assert check.accounts[0].balance == 850

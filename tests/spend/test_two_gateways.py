"""No overspend under concurrency: two gateway processes on one PostgreSQL database share one
account's ledger; limits hold and every request is either served or refused. Directly, and
through PgBouncer in transaction and in session pooling mode (`route`, tests/conftest.py)."""

import asyncio

import pytest

from domain.actor import Actor
from domain.scope import Scope
from infrastructure.runtime import Runtime
from tests.support.processes import fire, worst_case_of_one_request

OPERATOR = Actor("operator", "test")


@pytest.mark.parametrize("route", ["direct", "transaction", "session"], indirect=True)
def test_two_gateways_never_overspend_a_keys_daily_limit(
    two_gateways: tuple[Runtime, list[str]],
) -> None:
    runtime, urls = two_gateways
    worst = worst_case_of_one_request()
    limit = worst * 40  # room for at most 40 requests' worst case
    account = runtime.app.open_account("two-gateways", OPERATOR, credits=10**9).account
    key = runtime.app.create_key(account.id, "busy", Scope(daily_limit=limit), OPERATOR)

    statuses = asyncio.run(fire(urls, [key.token.value], 300))

    served = statuses.count(200)
    refused = statuses.count(429)
    assert served + refused == 300, sorted(set(statuses))
    assert served >= 40 and refused > 0
    view = runtime.spend.view(account.id).result()
    spent = view.day_spent[str(key.key.id)]  # a new key is its own meter
    assert spent <= limit
    assert view.held == 0
    assert view.balance == 10**9 - spent


def test_two_gateways_never_overdraw_a_balance_shared_by_three_keys(
    two_gateways: tuple[Runtime, list[str]],
) -> None:
    runtime, urls = two_gateways
    worst = worst_case_of_one_request()
    credits = worst * 30
    account = runtime.app.open_account("shared", OPERATOR, credits=credits).account
    tokens = [
        runtime.app.create_key(account.id, f"k{i}", Scope(), OPERATOR).token.value for i in range(3)
    ]

    statuses = asyncio.run(fire(urls, tokens, 300))

    served, refused = statuses.count(200), statuses.count(402)
    assert served + refused == 300, sorted(set(statuses))
    assert served >= 30 and refused > 0
    view = runtime.spend.view(account.id).result()
    assert view.balance >= 0 and view.held == 0
    runtime.projections.catch_up(["usage"])
    with runtime.engine.connect() as conn:
        from sqlalchemy import func, select

        from projections.schema import usage

        rows, total = conn.execute(
            select(func.count(), func.coalesce(func.sum(usage.c.cost), 0)).where(
                usage.c.account_id == str(account.id)
            )
        ).one()
    assert rows == served
    assert credits - view.balance == total

"""Holds belong to a live process: the reconciler settles a stale hold only once its owner's
lease has expired (or past the backstop), and a settlement that comes after the reconciler
reports what the ledger charged."""

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from application.reconcile import OpenHold, ownerless
from domain.actor import Actor
from domain.scope import Scope
from infrastructure.liveness import ProcessLease, live_processes
from infrastructure.runtime import open_runtime
from infrastructure.settings import load_settings
from tests.support.spend import usage
from tests.support.stores import PEPPER

OPERATOR = Actor("operator", "test")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def hold(owner: str | None, age_seconds: float) -> OpenHold:
    return OpenHold(uuid4().hex, uuid4(), uuid4(), 100, NOW - timedelta(seconds=age_seconds), owner)


def test_only_holds_of_gone_owners_are_due_and_the_backstop_takes_the_rest() -> None:
    alive, dead, legacy = hold("a", 700), hold("b", 700), hold(None, 700)
    ancient = hold("a", 5000)
    due = ownerless(
        [alive, dead, legacy, ancient],
        lambda owners: {"a"} & set(owners),
        NOW,
        timedelta(seconds=1500),
    )
    assert due == [dead, legacy, ancient]
    assert ownerless([alive], lambda owners: {"a"}, NOW, None) == []


def test_a_live_gateways_stale_hold_is_left_alone_until_its_lease_expires(
    database_url: str, tmp_path: Path
) -> None:
    env = {
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        "LOWROUTER_HOLD_TIMEOUT_SECONDS": "0.01",
        "LOWROUTER_PROCESS_LEASE_SECONDS": "0.5",
    }
    runtime = open_runtime(load_settings(env, database_url=database_url))
    try:
        account = runtime.app.open_account("live", OPERATOR, credits=10**6).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        runtime.start_lease()
        assert runtime.lease is not None
        owner = runtime.lease.process_id
        runtime.spend.admit(account.id, "req-live", key.key.id, "m", 1000, None).result(10)
        time.sleep(0.05)  # past the hold timeout
        assert runtime.reconcile() == 0  # its owner renews its lease: a long request, not a crash
        assert live_processes(runtime.engine, {owner, "someone-else"}) == {owner}

        runtime.lease.close()  # the owner is gone (as a kill -9 stops the renewals)
        assert runtime.reconcile() == 1
        view = runtime.spend.view(account.id).result(10)
        assert view.held == 0 and view.balance == 10**6 - 1000

        # The gateway's own settlement, too late: it reports what the ledger charged.
        charged = runtime.spend.settle(account.id, "req-live", 10, usage()).result(10)
        assert charged is None
        assert runtime.spend.reconciled_cost(account.id, "req-live").result(10) == 1000
    finally:
        runtime.close()


def test_a_lease_that_stops_being_renewed_expires(database_url: str, tmp_path: Path) -> None:
    env = {"LOWROUTER_TOKEN_PEPPER": PEPPER, "LOWROUTER_DATA_DIR": str(tmp_path)}
    runtime = open_runtime(load_settings(env, database_url=database_url))
    try:
        lease = ProcessLease(runtime.engine, ttl_seconds=0.2)
        assert lease.renew()  # registered, but no thread renews it
        assert live_processes(runtime.engine, {lease.process_id}) == {lease.process_id}
        deadline = time.monotonic() + 5
        while live_processes(runtime.engine, {lease.process_id}):
            assert time.monotonic() < deadline, "the lease never expired"
            time.sleep(0.05)
        assert lease.renew()  # a process that was only cut off takes its lease up again
        assert live_processes(runtime.engine, {lease.process_id}) == {lease.process_id}
    finally:
        runtime.close()


def test_settings_take_fractional_deadlines() -> None:
    settings = load_settings(
        {
            "LOWROUTER_TOKEN_PEPPER": PEPPER,
            "LOWROUTER_MAX_REQUEST_SECONDS": "2.5",
            "LOWROUTER_UPSTREAM_IDLE_SECONDS": "0.5",
        },
        database_url="sqlite:///x.db",
    )
    assert (settings.max_request_seconds, settings.upstream_idle_seconds) == (2.5, 0.5)
    assert dataclasses.asdict(settings)["process_lease_seconds"] == 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_right_after_an_outage_no_lease_is_judged_dead_for_one_lease_period(
    database_url: str, tmp_path: Path
) -> None:
    """Every lease expired during the outage; a live gateway renews on its next tick. The
    reconciler's process saw the outage through its own lease's renewals, so it judges no lease
    dead until a whole lease period of working store has passed."""
    from sqlalchemy import create_engine

    env = {
        "LOWROUTER_TOKEN_PEPPER": PEPPER,
        "LOWROUTER_DATA_DIR": str(tmp_path),
        "LOWROUTER_HOLD_TIMEOUT_SECONDS": "0.01",
    }
    runtime = open_runtime(load_settings(env, database_url=database_url))
    try:
        account = runtime.app.open_account("outage", OPERATOR, credits=10**6).account
        key = runtime.app.create_key(account.id, "k", Scope(), OPERATOR)
        gateway = ProcessLease(runtime.engine, ttl_seconds=0.01)  # expired by the outage
        assert gateway.renew()
        runtime.spend.owner = gateway.process_id
        runtime.spend.admit(account.id, "req-out", key.key.id, "m", 1000, None).result(10)
        runtime.spend.owner = None
        clock = FakeClock()
        witness = ProcessLease(runtime.engine, ttl_seconds=30, clock=clock)
        runtime.lease = witness  # no renewal thread: the test renews it
        assert witness.renew() and witness.steady()  # never failed: judges as before

        witness.engine = create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db")
        assert not witness.renew()  # the store is out
        witness.engine = runtime.engine
        assert witness.renew()  # back
        time.sleep(0.05)  # the gateway's lease has expired; it has not renewed yet
        assert not witness.steady()
        assert runtime.reconcile() == 0  # its hold is not settled behind its back
        clock.now += 29.9
        assert runtime.reconcile() == 0
        clock.now += 0.2  # a whole lease period: a live gateway would have renewed by now
        assert witness.steady()
        assert runtime.reconcile() == 1
    finally:
        runtime.lease = None
        runtime.close()

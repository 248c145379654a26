"""The one metering use case: what each outcome is charged (pure), and a metered call on the
in-memory store — the hold before anything goes upstream, one settlement, refusals recorded,
observers told."""

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError
from hypothesis import given
from hypothesis import strategies as st

from application.app import Lowrouter
from application.metering import (
    CUT_SHORT,
    NOT_CHARGED,
    MeteredOutcome,
    MeteredRequest,
    Metering,
    Outcome,
    decide_charge,
)
from application.reconcile import OpenHold, reconcile
from application.retry import StoreUnavailable, TooMuchContention
from application.spend import SpendControl
from domain.actor import Actor
from domain.errors import DailyLimitExceeded, InsufficientCredits
from domain.policy import NO_POLICY, KeyPolicy
from domain.pricing import PriceSheet, TokenCounts, hold_for
from domain.routing import Catalogue, ModelEntry, NoModelAvailable, Provider, WrongModelKind
from domain.scope import Scope
from infrastructure.persistence import eventsourcing_env
from tests.conftest import PEPPER
from tests.support.spend import MutableClock

PRICES = PriceSheet(1_000_000, 2_000_000)
ESTIMATE = TokenCounts(30, 8)
OPERATOR = Actor("operator", "metering-tests")

tokens = st.builds(
    lambda p, c, cached, r: TokenCounts(p, c, min(cached, p), 0, min(r, c)),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)


# --- the charging decision, per outcome ---------------------------------------------------------


def test_an_answer_with_usage_is_charged_the_reported_usage() -> None:
    charge = decide_charge(Outcome.ANSWERED, PRICES, TokenCounts(10, 5), ESTIMATE)
    assert (charge.tokens, charge.cost, charge.cost_source) == (TokenCounts(10, 5), 20, "reported")
    assert (charge.status, charge.status_code) == ("ok", 200)


def test_an_answer_without_usage_is_charged_the_estimate() -> None:
    charge = decide_charge(Outcome.ANSWERED, PRICES, None, ESTIMATE)
    assert (charge.tokens, charge.cost_source) == (ESTIMATE, "estimated")
    assert charge.cost == PRICES.cost(ESTIMATE) > 0


@pytest.mark.parametrize("outcome", sorted(NOT_CHARGED, key=lambda o: o.value))
def test_failures_are_charged_nothing(outcome: Outcome) -> None:
    charge = decide_charge(outcome, PRICES, TokenCounts(10, 5), ESTIMATE)
    assert (charge.cost, charge.tokens, charge.cost_source) == (0, TokenCounts(), "none")


def test_an_upstream_refusal_records_its_status_code() -> None:
    charge = decide_charge(Outcome.UPSTREAM_REFUSED, PRICES, None, ESTIMATE, status_code=422)
    assert (charge.status, charge.status_code) == ("upstream_refused", 422)
    timeout = decide_charge(Outcome.UPSTREAM_TIMEOUT, PRICES, None, ESTIMATE)
    assert (timeout.status, timeout.status_code) == ("upstream_timeout", 504)


def test_a_stream_the_upstream_broke_off_is_truncated_and_charged_what_was_produced() -> None:
    charge = decide_charge(Outcome.BROKEN_OFF, PRICES, None, ESTIMATE)
    assert (charge.status, charge.status_code, charge.tokens, charge.cost_source) == (
        "upstream_truncated",
        502,
        ESTIMATE,
        "estimated",
    )
    oversized = decide_charge(Outcome.OVERSIZED, PRICES, None, ESTIMATE)
    assert (oversized.status, oversized.tokens) == ("upstream_error", ESTIMATE)


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [(Outcome.TRUNCATED, "upstream_truncated", 502), (Outcome.STALLED, "upstream_timeout", 504)],
)
def test_a_stream_cut_short_is_charged_what_was_delivered_as_a_hang_up(
    outcome: Outcome, status: str, code: int
) -> None:
    charge = decide_charge(outcome, PRICES, None, TokenCounts(30, 0))
    assert charge.tokens == TokenCounts(30, 1)  # never zero
    assert (charge.status, charge.status_code, charge.cost_source) == (status, code, "estimated")


def test_a_body_cut_mid_read_is_a_truncation_charged_nothing() -> None:
    charge = decide_charge(Outcome.TRUNCATED_BODY, PRICES, None, ESTIMATE)
    assert (charge.status, charge.cost, charge.cost_source) == ("upstream_truncated", 0, "none")


def test_a_client_hanging_up_before_any_output_is_still_charged_a_token() -> None:
    charge = decide_charge(Outcome.CLIENT_CLOSED, PRICES, None, TokenCounts(30, 0))
    assert charge.tokens == TokenCounts(30, 1)
    assert (charge.status, charge.status_code, charge.cost_source) == (
        "client_closed",
        499,
        "estimated",
    )


@given(st.sampled_from(list(Outcome)), st.none() | tokens, tokens)
def test_every_outcome_is_charged_a_non_negative_price_of_its_tokens(
    outcome: Outcome, reported: TokenCounts | None, estimated: TokenCounts
) -> None:
    charge = decide_charge(outcome, PRICES, reported, estimated)
    assert charge.cost == PRICES.cost(charge.tokens) >= 0
    if outcome in NOT_CHARGED:
        assert charge.cost == 0 and charge.cost_source == "none"
    elif outcome in CUT_SHORT:
        assert charge.tokens.completion_tokens >= 1  # never nothing
        assert charge.cost_source == ("reported" if charge.tokens == reported else "estimated")
    else:
        assert charge.tokens == (reported if reported is not None else estimated)


# --- a metered call on the in-memory store -------------------------------------------------------

OPENAI = Provider("p-openai", "http://127.0.0.1:9/v1", "", "us")
ANTHROPIC = Provider("p-anthropic", "http://127.0.0.1:9/v1", "", "us", api="anthropic")
CHAT = ModelEntry("a/chat", ("p-openai",), "chat", 1_000_000, 2_000_000, 100)
CLAUDE = ModelEntry("b/claude", ("p-anthropic",), "claude", 500_000, 1_000_000, 100)
EMBED = ModelEntry("a/embed", ("p-openai",), "embed", 20_000, 0, 0, kind="embedding")
CATALOGUE = Catalogue(
    {p.name: p for p in (OPENAI, ANTHROPIC)}, {m.id: m for m in (CHAT, CLAUDE, EMBED)}
)


@dataclass(frozen=True)
class Key:
    key_id: UUID
    account_id: UUID
    name: str
    scope: Scope
    policy: KeyPolicy = NO_POLICY
    lineage_id: UUID | None = None


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[MeteredOutcome] = []
        self.refusals: list[tuple[str, str]] = []

    def metered(self, outcome: MeteredOutcome) -> None:
        self.outcomes.append(outcome)

    def refused(self, api: Any, reason: str) -> None:
        self.refusals.append((api, reason))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ledger() -> Any:
    app = Lowrouter(eventsourcing_env("memory://"), pepper=PEPPER.encode())
    spend = SpendControl(app)
    yield app, spend
    spend.close()


def open_key(app: Lowrouter, credits: int, scope: Scope | None = None) -> Key:
    opened = app.open_account(f"acct-{datetime.now(UTC).timestamp()}", OPERATOR, credits)
    issued = app.create_key(opened.account.id, "k", scope or Scope(), OPERATOR)
    return Key(issued.key.id, opened.account.id, "k", scope or Scope())


def request(**fields: Any) -> MeteredRequest:
    return MeteredRequest(
        **{"api": "messages", "model": "a/chat", "prompt_bound": 40, "output_cap": 10, **fields}
    )


@pytest.mark.anyio
async def test_a_call_holds_its_worst_case_then_settles_once_with_the_outcome(ledger: Any) -> None:
    app, spend = ledger
    recorder = Recorder()
    metering = Metering(spend, CATALOGUE, recorder)
    key = open_key(app, 1_000_000)
    call = await metering.begin(key, "req-1", request(), started=0.0)

    assert call.hold == hold_for(CHAT.prices, 40, 10) > 0
    held = spend.view(key.account_id).result(5)
    assert held.held == call.hold  # durable before anything goes upstream

    charged = await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
    again = await call.finish(Outcome.CLIENT_CLOSED)  # a second report changes nothing

    assert charged == again == PRICES.cost(TokenCounts(12, 3))
    page = spend.view(key.account_id).result(5)
    assert page.held == 0 and page.balance == 1_000_000 - charged
    [outcome] = recorder.outcomes
    assert (outcome.api, outcome.model, outcome.provider, outcome.status) == (
        "messages",
        "a/chat",
        "p-openai",
        "ok",
    )
    assert (outcome.cost, outcome.cost_source) == (charged, "reported")


@pytest.mark.anyio
async def test_refusals_are_recorded_and_raised_before_anything_is_held(ledger: Any) -> None:
    app, spend = ledger
    recorder = Recorder()
    metering = Metering(spend, CATALOGUE, recorder)
    poor = open_key(app, 1)
    with pytest.raises(InsufficientCredits):
        await metering.begin(poor, "req-2", request(), started=0.0)
    limited = open_key(app, 1_000_000, Scope(daily_limit=1))
    with pytest.raises(DailyLimitExceeded):
        await metering.begin(limited, "req-3", request(), started=0.0)
    assert recorder.refusals == [
        ("messages", "insufficient_credits"),
        ("messages", "daily_limit_exceeded"),
    ]
    assert spend.view(poor.account_id).result(5).held == 0


@pytest.mark.anyio
async def test_an_abandoned_call_is_recorded_and_charged_nothing(ledger: Any) -> None:
    app, spend = ledger
    metering = Metering(spend, CATALOGUE)
    key = open_key(app, 1_000_000)
    call = await metering.begin(key, "req-4", request(), started=0.0)
    call.abandon()
    assert call.settled and call.charge is not None and call.charge.status == "gateway_error"
    page = spend.view(key.account_id).result(5)
    assert (page.held, page.balance) == (0, 1_000_000)


@pytest.mark.anyio
async def test_a_hold_whose_commit_was_lost_is_released_after_the_503(ledger: Any) -> None:
    app, spend = ledger
    metering = Metering(spend, CATALOGUE, store_wait=5.0)
    key = open_key(app, 1_000_000)
    save, lost = app.save, []

    def save_then_drop(*aggregates: Any, **kwargs: Any) -> Any:
        recorded = save(*aggregates, **kwargs)
        if not lost:  # the hold is stored, but the connection drops before the answer
            lost.append(True)
            raise OperationalError("server closed the connection unexpectedly")
        return recorded

    app.save = save_then_drop
    with pytest.raises(StoreUnavailable):
        await metering.begin(key, "req-5", request(), started=0.0)
    page = spend.view(key.account_id).result(5)  # behind the release, in the writer's order
    assert (page.held, page.balance) == (0, 1_000_000)


@pytest.mark.anyio
@pytest.mark.parametrize("answer_first_within", [None, 300.0])
async def test_a_settlement_whose_commit_was_lost_reports_what_it_charged(
    ledger: Any, answer_first_within: float | None
) -> None:
    """The settlement is stored but the connection drops before the acknowledgement: the retry
    finds the hold closed by its own first try, and reports what that try charged — the client,
    the metered outcome and the ledger agree (not 0)."""
    app, spend = ledger
    recorder = Recorder()
    metering = Metering(
        spend, CATALOGUE, recorder, store_wait=5.0, answer_first_within=answer_first_within
    )
    key = open_key(app, 1_000_000)
    call = await metering.begin(key, "req-lost-ack", request(), started=metering.timer())
    save, lost = app.save, []

    def save_then_drop(*aggregates: Any, **kwargs: Any) -> Any:
        recorded = save(*aggregates, **kwargs)
        if not lost:
            lost.append(True)
            raise OperationalError("server closed the connection unexpectedly")
        return recorded

    app.save = save_then_drop
    told = await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
    assert call._settlement is not None
    settled = call._settlement.result(5)

    page = spend.view(key.account_id).result(5)
    charged = 1_000_000 - page.balance
    assert lost and page.held == 0 and charged == PRICES.cost(TokenCounts(12, 3))
    assert told == settled == charged
    assert [outcome.cost for outcome in recorder.outcomes] == [charged]


@pytest.mark.anyio
async def test_too_much_contention_refuses_a_reserve_but_keeps_an_answered_settlement(
    ledger: Any,
) -> None:
    """Other writers keep winning the account's page: a reserve is refused (TooMuchContention),
    but a settlement of an answered request is never dropped: it stays queued and lands once
    the page is free again, charging what the client was told."""
    app, spend = ledger
    metering = Metering(spend, CATALOGUE, answer_first_within=300.0, store_wait=2.0)
    key = open_key(app, 1_000_000)
    call = await metering.begin(key, "answered", request(), started=metering.timer())
    save, contended = app.save, threading.Event()
    contended.set()

    def losing_save(*aggregates: Any, **kwargs: Any) -> Any:
        if contended.is_set():  # another gateway's write keeps taking the page's next version
            raise IntegrityError("version conflict")
        return save(*aggregates, **kwargs)

    app.save = losing_save
    told = await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
    refused = spend.reserve(key.account_id, "refused", key.key_id, "a/chat", 10, None)
    with pytest.raises(TooMuchContention):
        refused.result(10)
    assert call._settlement is not None and not call._settlement.done()
    contended.clear()
    assert call._settlement.result(10) == told
    page = spend.view(key.account_id).result(5)
    assert (page.held, page.balance) == (0, 1_000_000 - told)


@pytest.mark.anyio
async def test_one_accounts_contention_does_not_refuse_another_accounts_reserves(
    ledger: Any,
) -> None:
    """While a contended account's settlement waits to be retried, commands of other accounts
    go ahead apart (per-account order is kept), instead of sharing its failing transaction."""
    app, spend = ledger
    metering = Metering(spend, CATALOGUE, answer_first_within=300.0, store_wait=2.0)
    busy, calm = open_key(app, 1_000_000), open_key(app, 1_000_000)
    call = await metering.begin(busy, "busy", request(), started=metering.timer())
    save, contended = app.save, threading.Event()
    contended.set()

    def losing_save_on_busy(*aggregates: Any, **kwargs: Any) -> Any:
        if contended.is_set() and any(
            getattr(page, "account_id", None) == busy.account_id for page in aggregates
        ):
            raise IntegrityError("version conflict")
        return save(*aggregates, **kwargs)

    app.save = losing_save_on_busy
    await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
    for _ in range(500):  # until the busy settlement failed its locked tries: it is retrying
        if spend.retrying:
            break
        await asyncio.sleep(0.02)
    assert spend.retrying == 1
    other = await metering.begin(calm, "calm", request(), started=metering.timer())
    assert other.hold > 0
    assert spend.view(calm.account_id).result(5).held == other.hold
    contended.clear()
    assert call._settlement is not None and call._settlement.result(10) > 0


@pytest.mark.anyio
async def test_a_settlement_failing_after_its_answer_is_logged_redacted(ledger: Any) -> None:
    app, spend = ledger
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = logged.append  # type: ignore[method-assign]
    logging.getLogger("lowrouter.metering").addHandler(handler)  # whatever the root's setup
    metering = Metering(spend, CATALOGUE, answer_first_within=300.0, store_wait=2.0)
    key = open_key(app, 1_000_000)
    call = await metering.begin(key, "doomed", request(), started=metering.timer())
    secret = "a" * 64  # hash-shaped: a driver's parameters may carry one

    def broken_save(*aggregates: Any, **kwargs: Any) -> Any:
        raise ValueError(f"a bug [parameters: ('{secret}',)]")  # no retry cures it

    app.save = broken_save
    await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))
    assert call.settlement_pending and call._settlement is not None
    with pytest.raises(ValueError):
        call._settlement.result(5)
    logging.getLogger("lowrouter.metering").removeHandler(handler)
    [line] = [r.getMessage() for r in logged if "after its answer was sent" in r.getMessage()]
    assert "doomed" in line and "ValueError: a bug" in line and secret not in line


@pytest.mark.anyio
async def test_only_a_timed_out_hold_the_writer_had_taken_gets_a_release(ledger: Any) -> None:
    app, spend = ledger
    metering = Metering(spend, CATALOGUE, store_wait=0.2)
    key = open_key(app, 1_000_000)
    save, store_back = app.save, threading.Event()
    released: list[str] = []
    release = spend.release

    def slow_save(*aggregates: Any, **kwargs: Any) -> Any:
        store_back.wait(10)
        return save(*aggregates, **kwargs)

    def recorded_release(account_id: UUID, request_id: str, reason: str) -> Any:
        released.append(request_id)
        return release(account_id, request_id, reason)

    app.save, spend.release = slow_save, recorded_release
    with pytest.raises(StoreUnavailable):  # being written when the wait ran out: may land
        await metering.begin(key, "taken", request(), started=0.0)
    with pytest.raises(StoreUnavailable):  # still queued: cancelled, so it never lands
        await metering.begin(key, "queued", request(), started=0.0)
    store_back.set()
    page = spend.view(key.account_id).result(5)
    assert released == ["taken"]
    assert (page.held, page.balance) == (0, 1_000_000)


@pytest.mark.anyio
async def test_a_settlement_after_midnight_of_a_hold_reconciled_before_reports_its_charge() -> None:
    """A hold carried across midnight after the reconciler settled it (this gateway looked
    dead): the gateway's late settlement charges nothing more, and the client and the metered
    outcome are told what the ledger charged — the hold — not 0 and not a cost of their own."""
    clock = MutableClock(datetime(2031, 3, 14, 23, 50, tzinfo=UTC))
    app = Lowrouter(eventsourcing_env("memory://"), pepper=PEPPER.encode(), clock=clock)
    gateway, background = SpendControl(app), SpendControl(app)  # two processes' writers
    try:
        recorder = Recorder()
        key = open_key(app, 1_000_000)
        call = await Metering(gateway, CATALOGUE, recorder).begin(key, "r", request(), 0.0)
        reserved_at = clock()
        clock.advance(timedelta(minutes=5))
        hold = OpenHold("r", key.account_id, key.key_id, call.hold, reserved_at, "gone")
        assert reconcile(app, background, lambda before: [hold], timedelta(minutes=1)) == 1
        clock.advance(timedelta(minutes=10))  # 00:05 the next day: a new page

        charged = await call.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3))

        assert charged == call.hold
        [outcome] = recorder.outcomes
        assert outcome.cost == call.hold
        page = gateway.view(key.account_id).result(5)
        assert (page.day, page.held, page.balance) == ("2031-03-15", 0, 1_000_000 - call.hold)
    finally:
        gateway.close()
        background.close()


def test_routing_follows_the_api_the_kind_and_the_dialect() -> None:
    metering = Metering(None, CATALOGUE)  # type: ignore[arg-type]  # routing needs no ledger
    anywhere = Scope()
    assert [p.name for _, p in metering.route(anywhere, request(model="b/claude"))] == [
        "p-anthropic"
    ]
    auto = metering.route(anywhere, request(model="lowrouter/auto"))
    assert {e.id for e, _ in auto} == {"a/chat", "b/claude"}  # chat models only, cheapest first
    assert auto[0][0] == CLAUDE
    openai_only = request(model="lowrouter/auto", api="responses", dialects=("openai",))
    assert [e.id for e, _ in metering.route(anywhere, openai_only)] == ["a/chat"]
    with pytest.raises(WrongModelKind):
        metering.route(anywhere, request(model="a/embed"))
    with pytest.raises(WrongModelKind):
        metering.route(anywhere, request(model="a/chat", kind="embedding"))
    assert metering.route(anywhere, request(model="a/embed", kind="embedding"))[0][0] == EMBED
    with pytest.raises(NoModelAvailable):
        metering.route(Scope(models=("a/embed",)), request(model="lowrouter/auto"))


@pytest.mark.anyio
async def test_a_quick_call_is_answered_once_queued_and_a_late_one_once_durable(
    ledger: Any,
) -> None:
    """Settling after the answer: within `answer_first_within` of its start, finish answers with
    what the queued settlement will charge; past it (the reconciler might close an old hold
    first), it waits for the ledger's own answer."""
    app, spend = ledger
    now = [0.0]
    metering = Metering(spend, CATALOGUE, timer=lambda: now[0], answer_first_within=1.0)
    key = open_key(app, 1_000_000)
    quick = await metering.begin(key, "quick", request(), started=0.0)
    late = await metering.begin(key, "late", request(), started=0.0)
    save, store_back = app.save, threading.Event()

    def held_save(*aggregates: Any, **kwargs: Any) -> Any:
        store_back.wait(10)
        return save(*aggregates, **kwargs)

    app.save = held_save
    told = await asyncio.wait_for(quick.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3)), 1)
    assert quick.settlement_pending and told == PRICES.cost(TokenCounts(12, 3))
    now[0] = 2.0
    waiting = asyncio.ensure_future(late.finish(Outcome.ANSWERED, reported=TokenCounts(12, 3)))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # its settlement is not durable yet
    store_back.set()
    assert await asyncio.wait_for(waiting, 5) == told and not late.settlement_pending
    page = spend.view(key.account_id).result(5)
    assert (page.held, page.balance) == (0, 1_000_000 - 2 * told)  # charged what it was told

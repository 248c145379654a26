"""LedgerPage, the aggregate that holds the money invariants, on its own: every rule and refusal
(the policy's rates and monthly limit in more depth: test_ledger_limits.py),
without an application or a store (the state machine in tests/spend drives it through
SpendControl). A refused command raises and records nothing; every recorded change is an event,
so replaying a page's events gives the same page."""

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.actor import Actor
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    InvalidAmount,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.ledger import UNSETTLED, LedgerPage, page_id
from domain.policy import KeyPolicy
from tests.support.spend import usage

ACCOUNT = UUID("00000000-0000-4000-8000-000000000001")
DAY = date(2031, 3, 14)
AT = datetime(2031, 3, 14, 9, 0, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)
OPERATOR = Actor("operator", "cli:test")


def page_with(balance: int = 1_000, day: date = DAY) -> LedgerPage:
    """A page opened with `balance`, its opening event already collected."""
    page = LedgerPage.open(ACCOUNT, day, AT, balance)
    page.collect_events()
    return page


def recorded(page: LedgerPage) -> list[Aggregate.Event]:
    """The events a command recorded (and forget them, as saving would)."""
    return cast(list[Aggregate.Event], list(page.collect_events()))


def settle(
    page: LedgerPage, request_id: str, cost: int, at: datetime = AT, flags: list[str] | None = None
) -> int | None:
    """Settle with the usage fields the gateway records (one place to follow settle's signature)."""
    return page.settle(request_id, cost, at, usage(flags=flags or []))


def replayed(events: list[Aggregate.Event]) -> LedgerPage:
    aggregate: Any = None
    for event in events:
        aggregate = event.mutate(aggregate)
    assert isinstance(aggregate, LedgerPage)
    return aggregate


def figures(page: LedgerPage) -> dict[str, Any]:
    """Everything the page keeps (its money, holds and the meters' maps), without the id and
    version."""
    return {name: value for name, value in vars(page).items() if not name.startswith("_")}


# --- opening ----------------------------------------------------------------------------------


def test_a_page_has_the_deterministic_id_of_its_account_and_day() -> None:
    page = LedgerPage.open(ACCOUNT, DAY, AT, 500)
    assert page.id == page_id(ACCOUNT, DAY)
    assert page_id(ACCOUNT, DAY) != page_id(ACCOUNT, NEXT_DAY)
    assert page_id(ACCOUNT, DAY) != page_id(uuid4(), DAY)
    assert (page.day, page.opening_balance, page.balance) == ("2031-03-14", 500, 500)
    assert page.available == 500
    assert [type(e) for e in page.collect_events()] == [LedgerPage.Opened]


def test_carried_holds_are_held_but_not_counted_against_todays_limit() -> None:
    carried = {"r1": {"key_id": "k", "amount": 300, "day": "2031-03-13", "model": "m", "at": ""}}
    page = LedgerPage.open(ACCOUNT, DAY, AT, 1_000, carried)
    assert (page.total_held, page.available, page.day_held_by("k")) == (300, 700, 0)
    page.reserve("r2", "k", "m", 100, daily_limit=100, at=AT)  # yesterday's hold is not today's
    assert page.day_held_by("k") == 100


# --- funding ----------------------------------------------------------------------------------


def test_funding_adds_to_the_balance() -> None:
    page = page_with(100)
    page.fund(250, OPERATOR, AT)
    assert (page.balance, page.funded) == (350, 250)
    [event] = recorded(page)
    assert isinstance(event, LedgerPage.Funded)
    assert event.actor == OPERATOR.as_dict()


@pytest.mark.parametrize("amount", [0, -1, 1.5])
def test_funding_must_be_a_positive_whole_amount(amount: Any) -> None:
    page = page_with(100)
    with pytest.raises(InvalidAmount):
        page.fund(amount, OPERATOR, AT)
    assert recorded(page) == [] and page.balance == 100


# --- holds ------------------------------------------------------------------------------------


def test_a_hold_reduces_what_is_available_not_the_balance() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    assert (page.balance, page.total_held, page.available) == (1_000, 400, 600)
    assert page.day_held_by("k") == 400
    assert page.holds["r1"]["amount"] == 400 and page.holds["r1"]["day"] == page.day
    assert [type(e) for e in recorded(page)] == [LedgerPage.Reserved]


def test_reserving_twice_with_one_request_id_holds_once() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    recorded(page)
    page.reserve("r1", "k", "m", 900, daily_limit=None, at=AT)  # a retry: even with another amount
    assert recorded(page) == [] and page.total_held == 400


def test_a_negative_hold_is_refused() -> None:
    page = page_with(1_000)
    with pytest.raises(InvalidAmount):
        page.reserve("r1", "k", "m", -1, daily_limit=None, at=AT)
    assert recorded(page) == [] and page.holds == {}


def test_the_whole_balance_may_be_held_and_not_a_micro_credit_more() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 600, daily_limit=None, at=AT)
    with pytest.raises(InsufficientCredits) as refused:
        page.reserve("r2", "k", "m", 401, daily_limit=None, at=AT)
    assert (refused.value.balance, refused.value.held, refused.value.needed) == (1_000, 600, 401)
    page.reserve("r3", "k", "m", 400, daily_limit=None, at=AT)
    assert page.available == 0
    assert [type(e) for e in recorded(page)] == [LedgerPage.Reserved, LedgerPage.Reserved]


def test_the_daily_limit_counts_todays_spend_and_holds_of_that_key_only() -> None:
    page = page_with(10_000)
    page.reserve("r1", "k", "m", 300, daily_limit=1_000, at=AT)
    settle(page, "r1", 200, AT)  # spent 200
    page.reserve("r2", "k", "m", 500, daily_limit=1_000, at=AT)  # held 500
    page.reserve("other", "k2", "m", 900, daily_limit=1_000, at=AT)  # another key's own limit
    recorded(page)
    with pytest.raises(DailyLimitExceeded) as refused:
        page.reserve("r3", "k", "m", 301, daily_limit=1_000, at=AT)
    error = refused.value
    assert (error.spent, error.held, error.limit, error.needed) == (200, 500, 1_000, 301)
    assert recorded(page) == []
    page.reserve("r4", "k", "m", 300, daily_limit=1_000, at=AT)  # exactly up to the limit
    assert page.day_spent_by("k") + page.day_held_by("k") == 1_000


def test_a_zero_limit_refuses_everything_but_a_free_request() -> None:
    page = page_with(1_000)
    with pytest.raises(DailyLimitExceeded):
        page.reserve("r1", "k", "m", 1, daily_limit=0, at=AT)
    page.reserve("r2", "k", "m", 0, daily_limit=0, at=AT)
    assert page.holds["r2"]["amount"] == 0


def test_the_limit_is_checked_before_the_balance() -> None:
    page = page_with(10)
    with pytest.raises(DailyLimitExceeded):
        page.reserve("r1", "k", "m", 50, daily_limit=20, at=AT)


def test_a_negative_token_estimate_is_refused() -> None:
    page = page_with(1_000)
    with pytest.raises(InvalidAmount):
        page.reserve("r1", "k", "m", 1, daily_limit=None, at=AT, tokens=-1)
    assert recorded(page) == [] and page.holds == {}


# What a retry cannot cure is said first: a client told to wait must not be refused after it.
EVERY_LIMIT = KeyPolicy(monthly_limit=100, max_concurrent=1, requests_per_minute=1)


def exhausted_page() -> LedgerPage:
    """A page on which key k has met every limit of EVERY_LIMIT: one open hold of 100 (the
    month, the concurrency and the minute's request), and nothing left to hold."""
    page = page_with(100)
    page.reserve("r1", "k", "m", 100, daily_limit=100, at=AT, policy=EVERY_LIMIT)
    recorded(page)
    return page


@pytest.mark.parametrize(
    ("daily", "policy", "refusal"),
    [
        (100, EVERY_LIMIT, DailyLimitExceeded),
        (None, EVERY_LIMIT, MonthlyLimitExceeded),
        (None, KeyPolicy(max_concurrent=1, requests_per_minute=1), InsufficientCredits),
    ],
)
def test_refusals_come_in_order_daily_monthly_credits_then_rates(
    daily: int | None, policy: KeyPolicy, refusal: type[DomainError]
) -> None:
    page = exhausted_page()
    with pytest.raises(refusal):
        page.reserve("r2", "k", "m", 1, daily_limit=daily, at=AT, policy=policy)
    assert recorded(page) == []


def test_with_credits_left_the_concurrency_is_judged_before_the_rate() -> None:
    page = exhausted_page()
    page.fund(1_000, OPERATOR, AT)
    recorded(page)
    rates = KeyPolicy(max_concurrent=1, requests_per_minute=1)
    with pytest.raises(ConcurrencyLimitExceeded) as concurrent:
        page.reserve("r2", "k", "m", 1, daily_limit=None, at=AT, policy=rates)
    assert concurrent.value.limit == 1
    page.release("r1", "done", AT)
    with pytest.raises(RateLimitExceeded) as rate:
        page.reserve("r2", "k", "m", 1, daily_limit=None, at=AT, policy=rates)
    assert (rate.value.what, rate.value.limit, rate.value.used) == ("requests", 1, 1)
    assert [type(e) for e in recorded(page)] == [LedgerPage.Released]  # the refusals: nothing


def test_a_request_larger_than_tokens_per_minute_is_refused_with_no_wait_that_helps() -> None:
    page = page_with(1_000)
    policy = KeyPolicy(tokens_per_minute=100)
    with pytest.raises(RateLimitExceeded) as refused:
        page.reserve("r1", "k", "m", 1, daily_limit=None, at=AT, policy=policy, tokens=101)
    assert (refused.value.what, refused.value.retry_after) == ("tokens", None)
    page.reserve("r2", "k", "m", 1, daily_limit=None, at=AT, policy=policy, tokens=100)
    assert [type(e) for e in recorded(page)] == [LedgerPage.Reserved]


def test_rate_status_is_only_for_windowed_keys() -> None:
    page = page_with(1_000)
    assert page.rate_status("k", KeyPolicy(), AT) is None
    assert page.rate_status("k", KeyPolicy(monthly_limit=5), AT) is None
    policy = KeyPolicy(requests_per_minute=5, tokens_per_minute=1_000)
    page.reserve("r1", "k", "m", 1, daily_limit=None, at=AT, policy=policy, tokens=300)
    status = page.rate_status("k", policy, AT + timedelta(seconds=10))
    assert status is not None
    assert (status.requests_remaining, status.tokens_remaining) == (4, 700)
    assert status.requests_reset == pytest.approx(50.0)
    fresh = page.rate_status("k", policy, AT + timedelta(seconds=61))  # the minute has passed
    assert fresh is not None and (fresh.requests_remaining, fresh.tokens_remaining) == (5, 1_000)


def test_a_hold_the_reconciler_settled_remembers_what_it_charged() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    page.reserve("r2", "k", "m", 100, daily_limit=None, at=AT)
    page.settle("r1", 400, AT, usage(status=UNSETTLED))
    settle(page, "r2", 60, AT)  # a gateway's settlement: nothing for the reconciler to report
    assert (page.reconciled_cost("r1"), page.reconciled_cost("r2")) == (400, None)
    assert page.balance == 540
    assert settle(page, "r1", 10, AT) is None  # the gateway's late settlement charges nothing


# --- settling and releasing -------------------------------------------------------------------


def test_settling_charges_the_cost_and_frees_the_hold() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    recorded(page)
    assert settle(page, "r1", 150, AT) == 150
    assert (page.balance, page.settled, page.total_held, page.day_held_by("k")) == (850, 150, 0, 0)
    assert page.day_spent_by("k") == 150 and page.holds == {}
    [event] = recorded(page)
    assert isinstance(event, LedgerPage.Settled)
    assert (event.held, event.cost, event.key_id, event.reserved_day, event.flags) == (
        400,
        150,
        "k",
        "2031-03-14",
        [],
    )


def test_settling_twice_charges_once() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    settle(page, "r1", 150, AT)
    recorded(page)
    assert settle(page, "r1", 150, AT) is None
    assert settle(page, "never-held", 10, AT) is None
    assert recorded(page) == [] and page.balance == 850


def test_a_cost_above_the_hold_is_capped_and_flagged() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    assert settle(page, "r1", 999, AT, flags=["streamed_cut"]) == 400
    assert page.balance == 600
    event = recorded(page)[-1]
    assert isinstance(event, LedgerPage.Settled)
    assert (event.cost, event.flags) == (400, ["streamed_cut", "over_hold"])


def test_a_negative_cost_is_refused_and_keeps_the_hold() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    recorded(page)
    with pytest.raises(InvalidAmount):
        settle(page, "r1", -1, AT)
    assert recorded(page) == [] and page.total_held == 400


def test_releasing_frees_the_hold_without_charging_and_only_once() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 400, daily_limit=None, at=AT)
    recorded(page)
    assert page.release("r1", "upstream_error", AT) is True
    assert (page.balance, page.available) == (1_000, 1_000)
    assert (page.day_held_by("k"), page.day_spent_by("k")) == (0, 0)
    assert [type(e) for e in recorded(page)] == [LedgerPage.Released]
    assert page.release("r1", "upstream_error", AT) is False
    assert settle(page, "r1", 100, AT) is None  # released: nothing left to settle
    assert recorded(page) == []


# --- refusals and adjustments -----------------------------------------------------------------


def test_a_refusal_is_recorded_and_moves_no_money() -> None:
    page = page_with(1_000)
    page.record_refusal("k", "daily_limit_exceeded", 3, AT)
    [event] = recorded(page)
    assert isinstance(event, LedgerPage.Refused)
    assert (event.key_id, event.reason, event.count) == ("k", "daily_limit_exceeded", 3)
    assert page.balance == 1_000 and page.available == 1_000


def test_adjustments_move_the_balance_either_way_but_never_below_the_holds() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 300, daily_limit=None, at=AT)
    page.adjust(50, "goodwill", OPERATOR, AT, key_id="k")
    page.adjust(-750, "correction", OPERATOR, AT)  # down to exactly what is held
    assert (page.balance, page.adjusted, page.available) == (300, -700, 0)
    recorded(page)
    with pytest.raises(InsufficientCredits):
        page.adjust(-1, "too far", OPERATOR, AT)
    with pytest.raises(InvalidAmount):
        page.adjust(0, "nothing", OPERATOR, AT)
    assert recorded(page) == [] and page.balance == 300


# --- closing the books ------------------------------------------------------------------------


def test_close_and_open_carries_the_balance_and_the_open_holds() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 300, daily_limit=500, at=AT)
    page.reserve("r2", "k", "m", 100, daily_limit=500, at=AT)
    settle(page, "r2", 100, AT)
    recorded(page)
    later = AT + timedelta(days=1)
    new = page.close_and_open(NEXT_DAY, later)
    [closed] = recorded(page)
    assert isinstance(closed, LedgerPage.Closed)
    assert closed.closing_balance == 900 and set(closed.carried_holds) == {"r1"}
    assert page.closed
    assert new.id == page_id(ACCOUNT, NEXT_DAY)
    assert (new.opening_balance, new.balance, new.total_held, new.available) == (900, 900, 300, 600)
    assert new.day_spent_by("k") == 0 and new.day_held_by("k") == 0  # a new day, a new limit
    # yesterday's hold settles on today's page: charged, but to the day it was reserved in
    assert settle(new, "r1", 200, later) == 200
    assert (new.balance, new.total_held, new.day_spent_by("k")) == (700, 0, 0)


def test_what_the_reconciler_charged_survives_one_closing_of_the_books() -> None:
    """A hold reconciled before midnight, whose gateway's settlement comes after it: the late
    settlement finds the reconciler's charge on the new page (and its replay), not nothing."""
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 300, daily_limit=None, at=AT)
    assert page.settle("r1", 300, AT, usage(status=UNSETTLED)) == 300
    after_midnight = AT + timedelta(days=1)
    new = page.close_and_open(NEXT_DAY, after_midnight)
    opened = recorded(new)
    assert settle(new, "r1", 40, after_midnight) is None  # already settled: charges nothing
    assert new.reconciled_cost("r1") == 300
    assert replayed(opened).reconciled_cost("r1") == 300
    # Kept for one closing only: the page after next no longer carries it.
    following = new.close_and_open(NEXT_DAY + timedelta(days=1), after_midnight)
    assert following.reconciled_cost("r1") is None


@pytest.mark.parametrize("day", [DAY, DAY - timedelta(days=1)])
def test_a_page_opens_only_a_later_day(day: date) -> None:
    page = page_with(1_000)
    with pytest.raises(DomainError):
        page.close_and_open(day, AT)
    assert recorded(page) == [] and not page.closed


def test_a_closed_page_refuses_every_command() -> None:
    page = page_with(1_000)
    page.reserve("r1", "k", "m", 300, daily_limit=None, at=AT)
    page.close_and_open(NEXT_DAY, AT)
    recorded(page)
    commands = [
        lambda: page.fund(1, OPERATOR, AT),
        lambda: page.reserve("r2", "k", "m", 1, daily_limit=None, at=AT),
        lambda: settle(page, "r1", 1, AT),
        lambda: page.release("r1", "x", AT),
        lambda: page.record_refusal("k", "x", 1, AT),
        lambda: page.adjust(1, "x", OPERATOR, AT),
        lambda: page.close_and_open(NEXT_DAY + timedelta(days=1), AT),
    ]
    for command in commands:
        with pytest.raises(DomainError, match="closed"):
            command()
    assert recorded(page) == []


# --- any sequence of commands -----------------------------------------------------------------

# Small numbers, so limits and balances are met and passed often.
LIMIT = 10
REQUESTS = st.sampled_from(["a", "b", "c", "d"])  # a and b are key k1's, c and d key k2's
commands = st.lists(
    st.one_of(
        st.tuples(st.just("fund"), st.integers(1, 5)),
        st.tuples(st.just("reserve"), REQUESTS, st.integers(0, 6)),
        st.tuples(st.just("settle"), REQUESTS, st.integers(0, 8)),
        st.tuples(st.just("release"), REQUESTS),
        st.tuples(st.just("adjust"), st.integers(-6, 6)),
        st.tuples(st.just("close")),
    ),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(opening=st.integers(0, 20), steps=commands)
def test_no_sequence_of_commands_breaks_the_invariants_and_the_events_replay_it(
    opening: int, steps: list[tuple[Any, ...]]
) -> None:
    page = LedgerPage.open(ACCOUNT, DAY, AT, opening)
    events: list[Aggregate.Event] = recorded(page)
    day = DAY
    spent: dict[str, int] = {}  # key -> settled today, counted here from what settle returns
    for step in steps:
        key = "k1" if step[0] == "reserve" and step[1] in "ab" else "k2"
        try:
            if step[0] == "fund":
                page.fund(step[1], OPERATOR, AT)
            elif step[0] == "reserve":
                page.reserve(step[1], key, "m", step[2], daily_limit=LIMIT, at=AT)
            elif step[0] == "settle":
                hold = page.holds.get(step[1])
                charged = settle(page, step[1], step[2], AT)
                if hold is not None and charged is not None and hold["day"] == page.day:
                    spent[hold["key_id"]] = spent.get(hold["key_id"], 0) + charged
            elif step[0] == "release":
                page.release(step[1], "test", AT)
            elif step[0] == "adjust":
                page.adjust(step[1], "test", OPERATOR, AT)
            else:
                day += timedelta(days=1)
                new = page.close_and_open(day, AT)
                events += recorded(page)
                assert replayed(events) is not None and replayed(events).closed
                page, events, spent = new, recorded(new), {}
                continue
        except DomainError:
            assert recorded(page) == [], "a refused command recorded something"
            continue
        events += recorded(page)
        assert page.available >= 0
        for k in ("k1", "k2"):  # reserved without a meter: each key is its own
            held = [h for h in page.holds.values() if h["key_id"] == k]
            held_today = sum(h["amount"] for h in held if h["day"] == page.day)
            assert (page.day_spent_by(k), page.day_held_by(k)) == (spent.get(k, 0), held_today)
            assert page.day_spent_by(k) + page.day_held_by(k) <= LIMIT
            assert page.in_flight(k) == len(held)
        assert page.total_held == sum(hold["amount"] for hold in page.holds.values())
        assert page.balance == (page.opening_balance + page.funded + page.adjusted - page.settled)
    assert figures(replayed(events)) == figures(page)

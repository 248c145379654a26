"""The key policy's limits as invariants of the ledger page: requests and tokens per trailing
minute, concurrent holds, and the monthly limit carried across days and reset at a new month.
Pure aggregate tests with explicit times (the store-backed and multi-process ones are elsewhere)."""

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.ledger import LedgerPage
from domain.policy import KeyPolicy
from domain.usage import Usage

T0 = datetime(2031, 1, 30, 12, 0, 0, tzinfo=UTC)
KEY = "key-1"
SEC = timedelta(seconds=1)


def page(at: datetime = T0, balance: int = 10**9) -> LedgerPage:
    return LedgerPage.open(uuid4(), at.date(), at, opening_balance=balance)


def reserve(
    p: LedgerPage,
    rid: str,
    at: datetime,
    policy: KeyPolicy,
    amount: int = 1,
    tokens: int = 0,
    daily: int | None = None,
) -> None:
    p.reserve(rid, KEY, "m", amount, daily, at, policy=policy, tokens=tokens)


def settle(
    p: LedgerPage, rid: str, at: datetime, cost: int = 1, prompt: int = 0, completion: int = 0
) -> None:
    p.settle(
        rid,
        cost,
        at,
        Usage(
            key_name="k",
            model="m",
            provider=None,
            region=None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status="ok",
            status_code=200,
            latency_ms=1,
            streamed=False,
            client_ip=None,
            user_agent=None,
        ),
    )


def test_requests_per_minute_admits_exactly_the_limit_in_the_trailing_minute() -> None:
    p, policy = page(), KeyPolicy(requests_per_minute=3)
    for n in range(3):
        reserve(p, f"r{n}", T0 + n * SEC, policy)
    with pytest.raises(RateLimitExceeded) as refused:
        reserve(p, "r3", T0 + 10 * SEC, policy)
    assert (refused.value.what, refused.value.limit, refused.value.used) == ("requests", 3, 3)
    assert refused.value.retry_after == pytest.approx(50.0)  # the first leaves at T0 + 60 s
    # Settling does not give a request back: the window counts reservations.
    settle(p, "r0", T0 + 11 * SEC)
    with pytest.raises(RateLimitExceeded):
        reserve(p, "r3", T0 + 59 * SEC, policy)
    reserve(p, "r3", T0 + 60 * SEC, policy)  # r0 has left the trailing minute
    status = p.rate_status(KEY, policy, T0 + 60 * SEC)
    assert status is not None
    assert (status.requests_limit, status.requests_remaining) == (3, 0)


def test_tokens_per_minute_counts_held_estimates_then_what_was_used() -> None:
    p, policy = page(), KeyPolicy(tokens_per_minute=1000)
    reserve(p, "a", T0, policy, tokens=600)
    with pytest.raises(RateLimitExceeded) as refused:
        reserve(p, "b", T0 + SEC, policy, tokens=600)  # 600 held + 600 > 1000
    assert refused.value.what == "tokens" and refused.value.retry_after == pytest.approx(59.0)
    settle(p, "a", T0 + 2 * SEC, prompt=100, completion=50)  # it used 150, not 600
    reserve(p, "b", T0 + 3 * SEC, policy, tokens=600)
    assert p.window(KEY, T0 + 3 * SEC) == (2, 750)
    p.release("b", "upstream_error", T0 + 4 * SEC)  # released: it used nothing
    assert p.window(KEY, T0 + 4 * SEC) == (2, 150)
    with pytest.raises(RateLimitExceeded) as too_big:
        reserve(p, "c", T0 + 5 * SEC, policy, tokens=1001)
    assert too_big.value.retry_after is None  # no wait lets a request this large through


def test_max_concurrent_counts_open_holds_of_any_day() -> None:
    p, policy = page(), KeyPolicy(max_concurrent=2)
    reserve(p, "a", T0, policy)
    reserve(p, "b", T0, policy)
    with pytest.raises(ConcurrencyLimitExceeded):
        reserve(p, "c", T0, policy)
    nxt = p.close_and_open(date(2031, 1, 31), T0 + timedelta(hours=12))  # both carried
    with pytest.raises(ConcurrencyLimitExceeded):
        reserve(nxt, "c", T0 + timedelta(hours=12), policy)
    settle(nxt, "a", T0 + timedelta(hours=12))
    reserve(nxt, "c", T0 + timedelta(hours=12), policy)


def test_a_retried_reservation_is_not_counted_twice() -> None:
    p, policy = page(), KeyPolicy(requests_per_minute=1, max_concurrent=1)
    reserve(p, "a", T0, policy)
    reserve(p, "a", T0 + SEC, policy)  # idempotent: nothing more held, nothing refused
    assert p.window(KEY, T0 + SEC) == (1, 0) and p.in_flight(KEY) == 1


def test_the_window_survives_closing_the_books_at_midnight() -> None:
    before_midnight = datetime(2031, 1, 30, 23, 59, 40, tzinfo=UTC)
    p, policy = page(before_midnight), KeyPolicy(requests_per_minute=2)
    reserve(p, "a", before_midnight, policy)
    reserve(p, "b", before_midnight, policy)
    settle(p, "a", before_midnight)
    after = before_midnight + 30 * SEC  # 00:00:10 the next day
    nxt = p.close_and_open(after.date(), after)
    with pytest.raises(RateLimitExceeded):
        reserve(nxt, "c", after, policy)
    reserve(nxt, "c", before_midnight + 60 * SEC, policy)


def test_the_monthly_limit_carries_across_midnight_and_resets_with_the_month() -> None:
    policy = KeyPolicy(monthly_limit=1000)
    jan30 = page(T0)
    reserve(jan30, "a", T0, policy, amount=500)
    settle(jan30, "a", T0, cost=400)
    reserve(jan30, "b", T0, policy, amount=300)  # held over midnight
    jan31_at = datetime(2031, 1, 31, 0, 0, 1, tzinfo=UTC)
    jan31 = jan30.close_and_open(jan31_at.date(), jan31_at)
    assert jan31.spent_today == {} and jan31.month_spent_by(KEY) == 400
    with pytest.raises(MonthlyLimitExceeded) as refused:
        reserve(jan31, "c", jan31_at, policy, amount=301)  # 400 + 300 held + 301 > 1000
    assert (refused.value.spent, refused.value.held, refused.value.limit) == (400, 300, 1000)
    settle(jan31, "b", jan31_at, cost=100)  # charged to Jan 30, and to January
    assert jan31.month_spent_by(KEY) == 500
    reserve(jan31, "c", jan31_at, policy, amount=500)
    with pytest.raises(MonthlyLimitExceeded):
        reserve(jan31, "d", jan31_at, policy, amount=1)
    feb1_at = datetime(2031, 2, 1, 0, 0, 0, tzinfo=UTC)
    feb1 = jan31.close_and_open(feb1_at.date(), feb1_at)  # "c" is held into February
    assert feb1.month_spent_by(KEY) == 0 and feb1.month_held_by(KEY) == 0
    reserve(feb1, "d", feb1_at, policy, amount=1000)  # a new month, a whole new limit
    settle(feb1, "c", feb1_at, cost=500)  # January's hold is January's spend
    assert feb1.month_spent_by(KEY) == 0


def test_the_daily_limit_is_judged_before_the_rates_so_a_retry_is_not_invited() -> None:
    p, policy = page(), KeyPolicy(requests_per_minute=1)
    reserve(p, "a", T0, policy, amount=10, daily=10)
    with pytest.raises(DailyLimitExceeded):
        reserve(p, "b", T0, policy, amount=1, daily=10)


def test_a_page_replayed_from_its_events_has_the_same_windows_and_month() -> None:
    policy = KeyPolicy(requests_per_minute=5, tokens_per_minute=10_000, monthly_limit=10**6)
    p = page()
    for n in range(4):
        reserve(p, f"r{n}", T0 + n * SEC, policy, amount=10, tokens=100)
    settle(p, "r1", T0 + 5 * SEC, cost=7, prompt=10, completion=20)
    events = p.collect_events()
    replayed = None
    for event in events:
        replayed = event.mutate(replayed)
    assert replayed is not None
    assert replayed.windows == p.windows
    assert replayed.spent_month == p.spent_month and replayed.open_holds == p.open_holds


@given(
    gaps=st.lists(st.integers(0, 30), min_size=1, max_size=60),
    rpm=st.integers(1, 10),
)
def test_no_trailing_minute_ever_holds_more_than_the_limit(gaps: list[int], rpm: int) -> None:
    p, policy = page(), KeyPolicy(requests_per_minute=rpm)
    moment, admitted = T0, []
    for n, gap in enumerate(gaps):
        moment += gap * SEC
        try:
            reserve(p, f"r{n}", moment, policy)
            admitted.append(moment)
        except RateLimitExceeded as refusal:
            assert refusal.retry_after is not None and 0 < refusal.retry_after <= 60
            # refused only when the trailing minute is really full
            assert len([a for a in admitted if moment - 59 * SEC <= a]) == rpm
    for t in admitted:
        in_window = [a for a in admitted if t - 59 * SEC <= a <= t]
        assert len(in_window) <= rpm

"""The key policy's limits as invariants of the ledger page: requests and tokens per trailing
minute, concurrent holds, and the monthly limit carried across days and reset at a new month.
Pure aggregate tests with explicit times (the store-backed and multi-process ones are elsewhere)."""

import copy
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from eventsourcing.domain import Snapshot
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
from tests.support.spend import usage

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
    p.settle(rid, cost, at, usage(prompt_tokens=prompt, completion_tokens=completion))


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
    assert jan31.day_spent == {} and jan31.month_spent_by(KEY) == 400
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


# --- limits follow the rotation lineage ----------------------------------------------------------

ROOT, SUCCESSOR, THIRD = "key-root", "key-rotated", "key-rotated-again"
LINEAGE = (ROOT, SUCCESSOR, THIRD)


def reserve_as(
    p: LedgerPage, key: str, rid: str, at: datetime, policy: KeyPolicy, amount: int = 1, **kw: int
) -> None:
    """A key of the lineage whose meter is its root's id (what the gateway passes)."""
    p.reserve(rid, key, "m", amount, kw.get("daily"), at, policy=policy, meter=ROOT)


def test_a_rotation_chain_shares_one_daily_limit() -> None:
    p = page()
    for n, key in enumerate(LINEAGE):
        reserve_as(p, key, f"r{n}", T0, KeyPolicy(), amount=30, daily=100)
        settle(p, f"r{n}", T0, cost=30)
    with pytest.raises(DailyLimitExceeded) as refused:  # 90 spent by the lineage, 11 more > 100
        reserve_as(p, THIRD, "r3", T0, KeyPolicy(), amount=11, daily=100)
    assert (refused.value.spent, refused.value.limit) == (90, 100)
    reserve_as(p, THIRD, "r3", T0, KeyPolicy(), amount=10, daily=100)
    with pytest.raises(DailyLimitExceeded):  # held counts too, whoever holds it
        reserve_as(p, ROOT, "r4", T0, KeyPolicy(), amount=1, daily=100)
    assert (p.day_spent_by(ROOT), p.day_spent_by(SUCCESSOR)) == (90, 0)  # kept under the root


def test_a_rotation_chain_shares_the_monthly_limit_rates_and_concurrency() -> None:
    monthly = KeyPolicy(monthly_limit=50)
    p = page()
    reserve_as(p, ROOT, "m0", T0, monthly, amount=30)
    with pytest.raises(MonthlyLimitExceeded):
        reserve_as(p, SUCCESSOR, "m1", T0, monthly, amount=21)
    rpm = KeyPolicy(requests_per_minute=2)
    q = page()
    reserve_as(q, ROOT, "a", T0, rpm)
    reserve_as(q, SUCCESSOR, "b", T0 + SEC, rpm)
    with pytest.raises(RateLimitExceeded):
        reserve_as(q, THIRD, "c", T0 + 2 * SEC, rpm)
    concurrent = KeyPolicy(max_concurrent=1)
    c = page()
    reserve_as(c, ROOT, "x", T0, concurrent)
    with pytest.raises(ConcurrencyLimitExceeded):
        reserve_as(c, SUCCESSOR, "y", T0, concurrent)


def test_the_lineages_day_survives_replay_and_settles_after_midnight_to_its_day() -> None:
    p = page()
    reserve_as(p, ROOT, "a", T0, KeyPolicy(), amount=60, daily=100)
    replayed = None
    for event in p.collect_events():
        replayed = event.mutate(replayed)
    assert replayed is not None and replayed.day_held == {ROOT: 60}
    with pytest.raises(DailyLimitExceeded):
        reserve_as(replayed, SUCCESSOR, "b", T0, KeyPolicy(), amount=41, daily=100)
    midnight = datetime(2031, 1, 31, 0, 0, 1, tzinfo=UTC)
    nxt = replayed.close_and_open(midnight.date(), midnight)
    reserve_as(nxt, SUCCESSOR, "b", midnight, KeyPolicy(), amount=100, daily=100)  # a new day
    settle(nxt, "a", midnight, cost=60)  # yesterday's hold is yesterday's spend
    assert nxt.day_spent == {}


# What a page held in release 0.2 (its snapshots have no per-meter maps and no class_version).
STATE_0_2 = {"account_id", "day", "opening_balance", "balance", "funded", "settled", "adjusted"}
STATE_0_2 |= {"holds", "total_held", "held_today", "spent_today", "closed", "_id", "_version"}


def restored_from_0_2_snapshot(p: LedgerPage) -> LedgerPage:
    """`p` as a 0.2 snapshot held it. 0.2 kept the day's figures by key id, which is what the
    meter maps hold for keys reserved without a meter (the only kind 0.2 had)."""
    taken = Snapshot.take(p)
    old = {k: v for k, v in taken.state.items() if k in STATE_0_2}
    old |= {"held_today": dict(p.day_held), "spent_today": dict(p.day_spent)}
    return from_snapshot_state(taken, old)


def restored_from_v2_snapshot(p: LedgerPage, spent_today: dict[str, int]) -> LedgerPage:
    """`p` as a snapshot of class version 2 held it: the per-meter maps, and beside them the
    per-key day maps version 3 dropped (today's open holds and `spent_today`, by key id)."""
    taken = Snapshot.take(p)
    assert taken.state["class_version"] == 3
    held_today: dict[str, int] = {}
    for hold in p.holds.values():
        if hold["day"] == p.day:
            held_today[hold["key_id"]] = held_today.get(hold["key_id"], 0) + hold["amount"]
    state = dict(taken.state) | {"class_version": 2}
    state |= {"held_today": held_today, "spent_today": spent_today}
    return from_snapshot_state(taken, state)


def from_snapshot_state(taken: Snapshot, state: dict[str, object]) -> LedgerPage:
    snapshot = Snapshot(
        originator_id=taken.originator_id,
        originator_version=taken.originator_version,
        timestamp=taken.timestamp,
        topic=taken.topic,
        state=copy.deepcopy(state),
    )
    restored = snapshot.mutate(None)
    assert isinstance(restored, LedgerPage)
    return restored


def figures(p: LedgerPage) -> dict[str, object]:
    return {k: v for k, v in vars(p).items() if not k.startswith("_")}


def test_a_page_from_a_0_2_snapshot_replays_settle_release_and_reserve_exactly() -> None:
    p = page()
    p.reserve("only", "key-2", "m", 500, None, T0)  # the only hold of its meter
    reserve(p, "a", T0, KeyPolicy(), amount=1000, daily=5000)
    reserve(p, "b", T0, KeyPolicy(), amount=1000, daily=5000)
    settle(p, "a", T0, cost=200)
    p.collect_events()
    restored = restored_from_0_2_snapshot(p)
    assert figures(restored) == figures(p)  # the maps are rebuilt, before any handler runs
    settle(p, "only", T0 + SEC, cost=300)
    reserve(p, "c", T0 + SEC, KeyPolicy(), amount=1000, daily=5000)
    p.release("c", "client_closed", T0 + SEC)  # one of two holds of the meter
    reserve(p, "d", T0 + SEC, KeyPolicy(), amount=700)  # no daily limit
    settle(p, "b", T0 + SEC, cost=400)
    for event in p.collect_events():
        restored = event.mutate(restored)
    assert figures(restored) == figures(p)
    assert (restored.day_held, restored.day_spent) == (
        {KEY: 700, "key-2": 0},
        {KEY: 600, "key-2": 300},
    )
    assert restored.total_held == 700 and restored.balance == 10**9 - 900
    with pytest.raises(DailyLimitExceeded):  # 600 spent + 700 held + 3701 > 5000
        reserve(restored, "e", T0 + SEC, KeyPolicy(), amount=3701, daily=5000)


def test_commands_on_a_page_from_a_0_2_snapshot_count_each_hold_once() -> None:
    p = page()
    reserve(p, "a", T0, KeyPolicy(), amount=1000)
    reserve(p, "b", T0, KeyPolicy(), amount=1000)
    p.reserve("only", "key-2", "m", 500, None, T0)
    restored = restored_from_0_2_snapshot(p)
    restored.settle("only", 300, T0 + SEC, usage())
    restored.release("a", "client_closed", T0 + SEC)
    reserve(restored, "c", T0 + SEC, KeyPolicy(), amount=250)
    assert restored.day_held == {KEY: 1250, "key-2": 0}
    assert restored.day_spent == {"key-2": 300}
    assert (restored.open_holds, restored.held_month) == ({KEY: 2}, {KEY: 1250, "key-2": 0})


def test_a_page_from_a_version_2_snapshot_drops_the_per_key_maps_and_replays_exactly() -> None:
    p = page()
    reserve_as(p, ROOT, "a", T0, KeyPolicy(), amount=40, daily=100)
    reserve_as(p, SUCCESSOR, "b", T0, KeyPolicy(), amount=30, daily=100)
    settle(p, "a", T0, cost=25)
    p.reserve("other", "key-2", "m", 500, None, T0)
    p.collect_events()
    restored = restored_from_v2_snapshot(p, spent_today={ROOT: 25})
    assert not hasattr(restored, "held_today") and not hasattr(restored, "spent_today")
    assert figures(restored) == figures(p)
    settle(p, "b", T0 + SEC, cost=30)
    reserve_as(p, THIRD, "c", T0 + SEC, KeyPolicy(), amount=45, daily=100)  # 55 + 45 = 100
    p.release("other", "client_closed", T0 + SEC)
    for event in p.collect_events():
        restored = event.mutate(restored)
    assert figures(restored) == figures(p)
    assert (restored.day_spent, restored.day_held) == ({ROOT: 55}, {ROOT: 45, "key-2": 0})
    with pytest.raises(DailyLimitExceeded):  # the lineage's 55 spent + 45 held is its limit
        reserve_as(restored, SUCCESSOR, "d", T0 + SEC, KeyPolicy(), amount=1, daily=100)


@given(st.lists(st.tuples(st.sampled_from(LINEAGE), st.integers(1, 40)), max_size=30))
def test_no_rotation_chain_ever_commits_more_than_the_daily_limit(
    uses: list[tuple[str, int]],
) -> None:
    p, limit, spent = page(), 100, 0
    for n, (key, amount) in enumerate(uses):
        try:
            reserve_as(p, key, f"r{n}", T0, KeyPolicy(), amount=amount, daily=limit)
        except DailyLimitExceeded:
            continue
        if n % 2:
            settle(p, f"r{n}", T0, cost=amount)
            spent += amount
        held = sum(hold["amount"] for hold in p.holds.values())
        assert spent + held <= limit  # counted here, not read from the page's meter
        assert (p.day_spent_by(ROOT), p.day_held_by(ROOT)) == (spent, held)

"""What raises a webhook: key lifecycle, budget thresholds, low credits, unexpected usage — each
once, derived from the log, with the data a receiver needs and never a token."""

from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.policy import KeyPolicy
from domain.scope import Scope
from domain.webhooks import THRESHOLDS, credits_low, retry_delay, thresholds_reached
from projections.schema import to_us
from projections.webhooks import deliveries_of_endpoint
from tests.support.webhooks import OPERATOR, Subscriber, open_account, use

CREDIT = 1_000_000


def by_percent(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(sent, key=lambda b: b["data"]["percent"])  # the order is not promised


def test_key_lifecycle_events(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["key.created", "key.updated", "key.rotated", "key.revoked"])
    key_id, token = account.new_key("ci")
    runtime.app.rename_key(key_id, "ci-2", OPERATOR)
    runtime.app.scope_key(key_id, Scope(daily_limit=5 * CREDIT), OPERATOR)
    successor = runtime.app.rotate_key(key_id, OPERATOR)
    runtime.app.revoke_key(successor.key.id, OPERATOR, reason="done")
    subscriber.deliver(passes=2)

    seen = sorted(
        ((b["type"], b["data"]["key"]["id"]) for b in subscriber.bodies()), key=lambda x: x
    )
    assert seen == sorted(
        [
            ("key.created", str(key_id)),
            ("key.updated", str(key_id)),
            ("key.updated", str(key_id)),
            ("key.created", str(successor.key.id)),
            ("key.rotated", str(key_id)),
            ("key.revoked", str(successor.key.id)),
        ]
    )
    by_type = {b["type"]: b["data"] for b in subscriber.bodies()}
    assert by_type["key.rotated"]["successor_id"] == str(successor.key.id)
    assert by_type["key.revoked"]["reason"] == "done"
    assert by_type["key.revoked"]["actor"]["name"] == "cli:test"
    raw = b"".join(r.body for r in subscriber.receiver.received)
    assert token.encode() not in raw and successor.token.value.encode() not in raw


def test_budget_thresholds_fire_once_each_per_day(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["budget.threshold"])
    limited, _ = account.new_key("limited", Scope(daily_limit=10 * CREDIT))
    unlimited, _ = account.new_key("unlimited")
    for cost in (3, 1, 1, 4, 1):  # 30 %, 40 %, 50 %, 90 %, 100 %
        use(runtime, account.id, limited, cost * CREDIT)
        use(runtime, account.id, unlimited, cost * CREDIT)
    sent = by_percent(subscriber.deliver())
    committed = [
        (b["data"]["percent"], float(b["data"]["spent"]) + float(b["data"]["held"])) for b in sent
    ]  # settled + held: what the daily limit is checked against (reached on the hold)
    assert committed == [(50, 5.0), (80, 9.0), (100, 10.0)]
    assert {b["data"]["key"]["id"] for b in sent} == {str(limited)}
    assert sent[0]["data"]["spent"] == "4.000000"  # 50 % was reached by the hold of the third
    assert all(b["data"]["period"] == "daily" and b["data"]["limit"] == "10.000000" for b in sent)


def test_a_refusal_for_the_daily_limit_is_100_percent(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["budget.threshold"])
    key, _ = account.new_key("limited", Scope(daily_limit=10 * CREDIT))
    use(runtime, account.id, key, 6 * CREDIT)  # 60 %
    runtime.spend.record_refusal(account.id, key, "daily_limit_exceeded")  # asked for 5 more
    runtime.spend.record_refusal(account.id, key, "insufficient_credits")  # not about the limit
    runtime.spend.view(account.id).result()  # queued behind the refusals: they are saved
    sent = by_percent(subscriber.deliver())
    assert [(b["data"]["percent"], b["data"]["refused"]) for b in sent] == [
        (50, False),
        (80, True),
        (100, True),
    ]


def test_daily_thresholds_count_the_rotation_lineages_day(subscriber: Subscriber) -> None:
    """A successor's day starts from what its predecessor spent (issue 15), as its limit does."""
    runtime = subscriber.runtime
    account = subscriber.account(["budget.threshold"])
    first, _ = account.new_key("rotating", Scope(daily_limit=10 * CREDIT))
    use(runtime, account.id, first, 6 * CREDIT)  # 60 %
    successor = runtime.app.rotate_key(first, OPERATOR).key.id
    use(runtime, account.id, successor, 3 * CREDIT, meter=first)  # the lineage's 90 %
    sent = by_percent(subscriber.deliver())
    assert [(b["data"]["percent"], b["data"]["key"]["id"]) for b in sent] == [
        (50, str(first)),
        (80, str(successor)),
    ]
    assert sent[1]["data"]["spent"] == "6.000000" and sent[1]["data"]["held"] == "3.000000"


def test_monthly_thresholds_count_the_month_under_the_keys_meter(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["budget.threshold"])
    policy = KeyPolicy(monthly_limit=10 * CREDIT)
    key = runtime.app.create_key(
        account.id, "monthly", Scope(daily_limit=100 * CREDIT), OPERATOR, policy=policy
    ).key.id
    for cost in (3, 3, 2):  # 30 %, 60 %, 80 % of the month; 8 % of the day
        use(runtime, account.id, key, cost * CREDIT)
    sent = by_percent(subscriber.deliver())
    month = runtime.app.clock().strftime("%Y-%m")
    assert [(b["data"]["period"], b["data"]["month"], b["data"]["percent"]) for b in sent] == [
        ("monthly", month, 50),
        ("monthly", month, 80),
    ]


def test_key_expiring_is_sent_7_days_before_and_withdrawn_when_the_expiry_changes(
    subscriber: Subscriber,
) -> None:
    runtime = subscriber.runtime
    account = open_account(runtime)
    endpoint_id, _ = account.subscribe(subscriber.receiver.url, ["key.expiring"])
    now = runtime.app.clock()
    later = now + timedelta(days=30)
    soon = runtime.app.create_key(
        account.id, "soon", Scope(), OPERATOR, policy=KeyPolicy(expires_at=now + timedelta(days=3))
    ).key.id
    month = runtime.app.create_key(
        account.id, "month", Scope(), OPERATOR, policy=KeyPolicy(expires_at=later)
    ).key.id
    changed = runtime.app.create_key(
        account.id, "changed", Scope(), OPERATOR, policy=KeyPolicy(expires_at=later)
    ).key.id
    runtime.app.update_key(changed, OPERATOR, policy_changes={"expires_at": None})

    subscriber.deliver()  # now: only the key expiring within 7 days
    assert [b["data"]["key"]["id"] for b in subscriber.bodies()] == [str(soon)]
    pending = [d for d in deliveries_of_endpoint(runtime.engine, endpoint_id) if d.attempt == 0]
    assert [d.next_attempt_at for d in pending] == [later - timedelta(days=7)]

    in_23_days = to_us(later - timedelta(days=7)) + 1_000_000
    subscriber.deliver(passes=2, now_us=lambda: in_23_days)
    assert sorted(b["data"]["key"]["id"] for b in subscriber.bodies()) == sorted(
        [str(soon), str(month)]
    )  # not the key whose expiry was removed
    assert subscriber.bodies()[-1]["data"]["expires_at"].startswith(later.date().isoformat())


def test_credits_low_once_per_funding(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["credits.low"], credits=10 * CREDIT)
    key, _ = account.new_key()
    use(runtime, account.id, key, 8 * CREDIT)  # 2 left: 20 %
    use(runtime, account.id, key, int(1.5 * CREDIT))  # 0.5 left: 5 %, under 10 %
    use(runtime, account.id, key, int(0.2 * CREDIT))  # still low: not again
    runtime.spend.fund(account.id, 10 * CREDIT, OPERATOR).result()  # 10.3: fine
    use(runtime, account.id, key, int(9.5 * CREDIT))  # 0.8 < 1.0: low again, a new funding
    subscriber.deliver(passes=2)
    assert sorted(b["data"]["balance"] for b in subscriber.bodies()) == ["0.500000", "0.800000"]
    assert len(set(subscriber.receiver.ids())) == 2


def test_unexpected_usage_flags_are_sent(subscriber: Subscriber) -> None:
    runtime = subscriber.runtime
    account = subscriber.account(["usage.unexpected"])
    key, _ = account.new_key()
    use(runtime, account.id, key, 10, address="198.51.100.1")  # the first use: never flagged
    use(runtime, account.id, key, 10, address="203.0.113.9")
    use(runtime, account.id, key, 10, address="203.0.113.9")
    subscriber.deliver()
    (sent,) = subscriber.bodies()
    assert sent["type"] == "usage.unexpected"
    assert (sent["data"]["flag"]["kind"], sent["data"]["flag"]["subject"]) == (
        "new_address",
        "203.0.113.9",
    )
    runtime.projections.reset("webhooks")  # rebuilt: the same message, not sent again
    subscriber.deliver()
    assert len(subscriber.receiver.received) == 1


@given(
    st.integers(min_value=1, max_value=10**9),
    st.lists(st.integers(min_value=0, max_value=10**8), max_size=30),
)
def test_each_threshold_is_reached_once_and_in_order(limit: int, costs: list[int]) -> None:
    reached: list[int] = []
    spent = 0
    for cost in costs:
        spent += cost
        new = thresholds_reached(spent, limit, reached)
        assert new == sorted(new)
        reached += new
    assert reached == [t for t in THRESHOLDS if spent * 100 >= limit * t]


def test_low_credits_and_the_retry_schedule_are_bounded() -> None:
    assert credits_low(99, 1000) and not credits_low(100, 1000) and not credits_low(0, 0)
    schedule = (5.0, 300.0)
    waits = [retry_delay(n, schedule) for n in (1, 2, 3)]
    assert waits[2] is None
    assert 4.0 <= waits[0] <= 6.0 and 240.0 <= waits[1] <= 360.0  # type: ignore[operator]

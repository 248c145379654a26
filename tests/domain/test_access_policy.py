"""The access policy (domain.access): every combination of rotation, grace, expiry and revocation,
the IP allowlist, what may be changed, and the aggregate obeying the same answer."""

from datetime import UTC, datetime, timedelta
from itertools import product
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import key_access
from domain.actor import Actor
from domain.errors import DomainError, InvalidPolicy, KeyRevoked
from domain.keys import ApiKey
from domain.policy import KeyPolicy, parse_duration
from domain.scope import Scope

ACTOR = Actor("operator", "cli:test")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# Each event is at an hour offset from T0 (None: it never happened). "now" is at 5 h.
NOW = T0 + 5 * HOUR
OFFSETS = [None, 2, 8]  # before now, after now


def at(offset: int | None) -> datetime | None:
    return None if offset is None else T0 + offset * HOUR


def expected(revoked: int | None, grace: int | None, expiry: int | None) -> str:
    """The rule, written independently: a revocation (decided) wins whenever it happened; else
    whichever of grace end and expiry passed first; else rotating if rotated, else active."""
    if revoked is not None and revoked <= 5:
        return "revoked"
    ended = [(t, why) for t, why in ((grace, "grace_ended"), (expiry, "expired")) if t is not None]
    passed = [(t, why) for t, why in ended if t <= 5]
    if passed:  # the earlier; at the same moment the rotation (decided) rather than the expiry
        return min(passed, key=lambda end: end[0])[1]
    return "rotating" if grace is not None else "active"


COMBINATIONS = list(product(OFFSETS, OFFSETS, OFFSETS))


@pytest.mark.parametrize(("revoked", "grace", "expiry"), COMBINATIONS)
def test_every_combination_of_revocation_grace_and_expiry(
    revoked: int | None, grace: int | None, expiry: int | None
) -> None:
    # A revocation "after now" has not happened yet: the aggregate would not have the event.
    revoked_at = at(revoked) if revoked is not None and revoked <= 5 else None
    access = key_access(
        revoked_at=revoked_at,
        grace_deadline=at(grace),
        policy=KeyPolicy(expires_at=at(expiry)),
        now=NOW,
    )
    reason = expected(revoked, grace, expiry)
    assert access.reason == reason
    assert access.usable is (reason in ("active", "rotating"))
    assert access.changeable is (reason in ("active", "rotating", "expired"))
    assert access.revocable is (reason not in ("revoked", "grace_ended"))
    assert access.rotatable is (reason in ("active", "expired") and grace is None)
    assert access.status == {"grace_ended": "revoked"}.get(reason, reason)
    if reason in ("revoked", "grace_ended", "expired"):
        assert access.ended_at is not None and access.ended_at <= NOW
    else:
        assert access.ended_at is None


@pytest.mark.parametrize("boundary", ["grace", "expiry"])
def test_a_key_ends_exactly_at_its_deadline(boundary: str) -> None:
    deadline = T0 + HOUR
    kwargs = {"grace_deadline": deadline} if boundary == "grace" else {}
    policy = KeyPolicy(expires_at=deadline) if boundary == "expiry" else KeyPolicy()
    before = key_access(
        revoked_at=None,
        policy=policy,
        now=deadline - timedelta(microseconds=1),
        **{"grace_deadline": None, **kwargs},
    )
    after = key_access(
        revoked_at=None, policy=policy, now=deadline, **{"grace_deadline": None, **kwargs}
    )
    assert before.usable and not after.usable
    assert after.reason == ("grace_ended" if boundary == "grace" else "expired")


ALLOWED = KeyPolicy(allowed_ips=("203.0.113.0/24", "2001:db8::/32", "10.1.2.3"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("203.0.113.7", True),
        ("203.0.114.7", False),
        ("10.1.2.3", True),
        ("10.1.2.4", False),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("::ffff:203.0.113.9", True),  # a dual-stack socket's view of an IPv4 client
        ("fe80::1%eth0", False),
        ("not-an-address", False),
        (None, False),
    ],
)
def test_the_allowlist_refuses_addresses_outside_it(address: str | None, allowed: bool) -> None:
    access = key_access(
        revoked_at=None, grace_deadline=None, policy=ALLOWED, now=NOW, client_ip=address
    )
    assert access.reason == ("active" if allowed else "ip_not_allowed")
    assert access.usable is allowed
    assert access.state == "active" and access.changeable  # the key itself is fine


def test_no_allowlist_admits_any_address_and_an_ended_key_says_why_before_the_address() -> None:
    assert key_access(revoked_at=None, grace_deadline=None, now=NOW, client_ip=None).usable
    expired = KeyPolicy(expires_at=T0, allowed_ips=("10.0.0.0/8",))
    access = key_access(
        revoked_at=None, grace_deadline=None, policy=expired, now=NOW, client_ip="192.0.2.1"
    )
    assert access.reason == "expired"


@pytest.mark.parametrize(
    "fields",
    [
        {"allowed_ips": []},
        {"allowed_ips": ["10.0.0.0/33"]},
        {"allowed_ips": ["example.com"]},
        {"allowed_ips": "10.0.0.0/8"},
        {"requests_per_minute": 0},
        {"tokens_per_minute": -1},
        {"max_concurrent": True},
        {"monthly_limit": -5},
        {"expires_at": datetime(2026, 1, 1)},  # no zone
    ],
)
def test_a_malformed_policy_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy):
        KeyPolicy.from_fields(**fields)


def test_networks_are_normalised_and_durations_parsed() -> None:
    policy = KeyPolicy(allowed_ips=("10.1.2.3/8", "10.0.0.0/8", "2001:DB8::/32"))
    assert policy.allowed_ips == ("10.0.0.0/8", "2001:db8::/32")
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    for bad in ("", "90", "d", "-1d", "0s", "99999w"):
        with pytest.raises(InvalidPolicy):
            parse_duration(bad)


# The aggregate obeys the same answer -----------------------------------------------------------


def new_key(policy: KeyPolicy | None = None) -> ApiKey:
    return ApiKey.create(
        key_id=uuid4(),
        account_id=uuid4(),
        name="ci",
        token_hash="0" * 64,
        prefix="lr-sk-AbCd",
        last4="wXyZ",
        scope=Scope(),
        actor=ACTOR,
        at=T0,
        policy=policy or KeyPolicy(),
    )


def test_an_expired_key_may_be_given_a_later_expiry_and_works_again() -> None:
    key = new_key(KeyPolicy(expires_at=T0 + HOUR))
    assert key.status_at(T0) == "active"
    assert key.status_at(T0 + HOUR) == "expired"
    key.change_policy(KeyPolicy(expires_at=T0 + 3 * HOUR), ACTOR, T0 + 2 * HOUR)
    assert key.status_at(T0 + 2 * HOUR) == "active"
    assert [type(e).__name__ for e in key.collect_events()] == [
        "Created",
        "PolicyChanged",
        "PolicyChanged",
    ]


def test_a_key_whose_grace_ended_cannot_be_changed_but_a_rotating_one_can() -> None:
    key = new_key()
    key.rotate(uuid4(), T0 + HOUR, ACTOR, T0)
    key.rescope(Scope(region="eu"), ACTOR, T0 + timedelta(minutes=30))  # in its grace
    with pytest.raises(DomainError, match="already rotated"):
        key.rotate(uuid4(), T0 + 2 * HOUR, ACTOR, T0 + timedelta(minutes=30))
    with pytest.raises(KeyRevoked, match="grace period has ended"):
        key.change_policy(KeyPolicy(max_concurrent=1), ACTOR, T0 + HOUR)
    with pytest.raises(KeyRevoked):
        key.revoke("late", ACTOR, T0 + HOUR)


def test_an_expired_key_can_still_be_revoked_and_then_says_revoked() -> None:
    key = new_key(KeyPolicy(expires_at=T0 + HOUR))
    key.revoke("cleanup", ACTOR, T0 + 2 * HOUR)
    assert key.access_at(T0 + 3 * HOUR).reason == "revoked"
    with pytest.raises(KeyRevoked):
        key.change_policy(KeyPolicy(), ACTOR, T0 + 3 * HOUR)


def test_rotation_renews_an_expiring_policy_for_the_successor() -> None:
    policy = KeyPolicy(expires_at=T0 + timedelta(days=90), requests_per_minute=30)
    later = T0 + timedelta(days=80)
    successor = policy.for_successor(T0, later)
    assert successor.expires_at == later + timedelta(days=90)
    assert successor.requests_per_minute == 30
    assert KeyPolicy(max_concurrent=2).for_successor(T0, later) == KeyPolicy(max_concurrent=2)


moments = st.integers(0, 10).map(lambda h: T0 + h * HOUR)


@given(
    revoked=st.none() | moments,
    grace=st.none() | moments,
    expiry=st.none() | moments,
    now=moments,
)
def test_the_aggregate_and_the_policy_agree_on_every_change(
    revoked: datetime | None, grace: datetime | None, expiry: datetime | None, now: datetime
) -> None:
    """Whatever the aggregate allows or refuses is what the policy says it may do."""
    key = new_key(KeyPolicy(expires_at=expiry))
    if grace is not None:
        key.rotate(uuid4(), grace, ACTOR, T0)
    if revoked is not None and key.access_at(revoked).revocable:
        key.revoke("test", ACTOR, revoked)
    access = key.access_at(now)
    try:
        key.rename("other", ACTOR, now)
        renamed = True
    except KeyRevoked:
        renamed = False
    assert renamed is access.changeable

"""Acknowledging an unexpected-usage flag on a key: a past-tense event, once per flag, for a
known kind of flag only; a revoked key's flags can be acknowledged (book-keeping, not access).
And the spend-spike rule: over three times the trailing daily average, and at least 1 credit."""

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.actor import Actor
from domain.flags import (
    FLAG_KINDS,
    NEW_ADDRESS,
    SPEND_SPIKE,
    SPIKE_FACTOR,
    SPIKE_MINIMUM,
    InvalidFlag,
    check_flag,
    is_spend_spike,
)
from domain.keys import ApiKey
from domain.money import MICRO
from domain.scope import Scope

OWNER = Actor("dashboard", "session of lr-mk-AbCd…wXyZ", "203.0.113.5")
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def new_key() -> ApiKey:
    return ApiKey.create(
        key_id=uuid4(),
        account_id=uuid4(),
        name="prod-server",
        token_hash="0" * 64,
        prefix="lr-sk-AbCd",
        last4="wXyZ",
        scope=Scope(),
        actor=OWNER,
        at=T0,
    )


def test_acknowledging_a_flag_records_one_event_naming_it_and_who() -> None:
    key = new_key()
    assert key.acknowledge_flag(NEW_ADDRESS, "198.51.100.7", OWNER, T0 + timedelta(hours=1))
    [event] = [e for e in key.collect_events() if isinstance(e, ApiKey.FlagAcknowledged)]
    assert (event.kind, event.subject) == (NEW_ADDRESS, "198.51.100.7")
    assert event.actor == OWNER.as_dict()
    assert key.acknowledged_flags == {(NEW_ADDRESS, "198.51.100.7")}


def test_acknowledging_the_same_flag_again_records_nothing_more() -> None:
    key = new_key()
    key.acknowledge_flag(SPEND_SPIKE, "2026-03-02", OWNER, T0)
    key.collect_events()
    assert not key.acknowledge_flag(SPEND_SPIKE, "2026-03-02", OWNER, T0)
    assert key.collect_events() == []


def test_a_revoked_keys_flag_can_still_be_acknowledged() -> None:
    key = new_key()
    key.revoke("leak", OWNER, T0)
    assert key.acknowledge_flag(NEW_ADDRESS, "198.51.100.7", OWNER, T0 + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("kind", "subject"),
    [("nonsense", "x"), ("", "x"), (NEW_ADDRESS, ""), (NEW_ADDRESS, "x" * 301)],
)
def test_an_unknown_kind_or_a_bad_subject_is_refused_and_records_nothing(
    kind: str, subject: str
) -> None:
    key = new_key()
    key.collect_events()
    with pytest.raises(InvalidFlag):
        key.acknowledge_flag(kind, subject, OWNER, T0)
    assert key.collect_events() == [] and key.acknowledged_flags == set()


def test_every_kind_the_projection_raises_is_known_to_the_domain() -> None:
    from projections import forensics

    raised = {
        forensics.NEW_ADDRESS,
        forensics.NEW_USER_AGENT,
        forensics.SPEND_SPIKE,
        forensics.OVER_HOLD,
    }
    assert raised == set(FLAG_KINDS)
    assert all(check_flag(kind, "s") == (kind, "s") for kind in FLAG_KINDS)


# The spend-spike rule -------------------------------------------------------------------------

amounts = st.integers(0, 10**12)  # micro-credits
days = st.integers(1, 7)


def test_a_spike_is_over_three_times_the_average_and_at_least_one_credit() -> None:
    assert SPIKE_MINIMUM == MICRO
    assert is_spend_spike(3 * MICRO + 1, 7 * MICRO, 7)  # average 1 credit a day
    assert not is_spend_spike(3 * MICRO, 7 * MICRO, 7)  # exactly three times: not over
    assert not is_spend_spike(MICRO - 1, 7, 7)  # 0.999999 against an average of 0.000001
    assert is_spend_spike(MICRO, 7, 7)  # one credit against the same small history
    assert not is_spend_spike(10 * MICRO, 0, 7)  # no spend in the trailing days: no history
    assert not is_spend_spike(10 * MICRO, MICRO, 0)


@given(spent=st.integers(0, SPIKE_MINIMUM - 1), total=amounts, span=days)
def test_a_day_below_the_minimum_never_flags_whatever_the_history(
    spent: int, total: int, span: int
) -> None:
    assert not is_spend_spike(spent, total, span)


@given(spent=amounts, more=amounts, total=amounts, span=days)
def test_spending_more_on_the_day_never_undoes_a_spike(
    spent: int, more: int, total: int, span: int
) -> None:
    if is_spend_spike(spent, total, span):
        assert is_spend_spike(spent + more, total, span)


@given(spent=st.integers(SPIKE_MINIMUM, 10**12), total=st.integers(1, 10**12), span=days)
def test_from_the_minimum_on_a_spike_is_exactly_over_the_factor_times_the_average(
    spent: int, total: int, span: int
) -> None:
    average = total / span
    if spent > SPIKE_FACTOR * average * (1 + 1e-9):
        assert is_spend_spike(spent, total, span)
    elif spent < SPIKE_FACTOR * average * (1 - 1e-9):
        assert not is_spend_spike(spent, total, span)

"""The rotation grace: one bound, MAX_GRACE, for inference and management keys alike."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from domain.accounts import Account
from domain.actor import Actor
from domain.errors import DomainError, InvalidGrace
from domain.rotation import MAX_GRACE, check_grace

ACTOR = Actor("operator", "test")
NOW = datetime(2026, 3, 1, tzinfo=UTC)
TOO_LONG = MAX_GRACE + timedelta(microseconds=1)


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(seconds=1), MAX_GRACE])
def test_a_grace_from_zero_to_max_grace_is_accepted(grace: timedelta) -> None:
    assert check_grace(grace) == grace


@pytest.mark.parametrize("grace", [timedelta(microseconds=-1), TOO_LONG, timedelta(days=365)])
def test_a_grace_below_zero_or_above_max_grace_is_refused(grace: timedelta) -> None:
    with pytest.raises(InvalidGrace, match=f"between 0 and {MAX_GRACE.days} days"):
        check_grace(grace)


def account_with_a_management_key() -> tuple[Account, UUID]:
    account = Account.open(uuid4(), "acme", ACTOR, NOW)
    key_id = uuid4()
    account.issue_management_key(key_id, "hash", "lr-mk-abcd", "wxyz", ACTOR, NOW)
    return account, key_id


def test_a_management_key_is_bound_by_the_same_grace() -> None:
    account, key_id = account_with_a_management_key()
    rotate = account.rotate_management_key
    with pytest.raises(InvalidGrace):
        rotate(key_id, uuid4(), "h2", "lr-mk-efgh", "1234", TOO_LONG, ACTOR, NOW)
    assert account.management_keys[str(key_id)]["successor_id"] is None
    rotate(key_id, uuid4(), "h2", "lr-mk-efgh", "1234", MAX_GRACE, ACTOR, NOW)
    assert account.management_keys[str(key_id)]["grace_deadline"] == NOW + MAX_GRACE


def test_a_refused_grace_is_a_domain_refusal() -> None:
    assert issubclass(InvalidGrace, DomainError)

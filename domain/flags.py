"""Unexpected-usage flags: what kinds there are, and what acknowledging one needs.

The forensics projection raises flags from the usage history (see projections/forensics.py);
an owner acknowledges one ("that new address is our new server") with an event on the key, so
the acknowledgement is part of the key's history and survives any rebuild of the read models.
"""

from domain.errors import DomainError
from domain.money import MICRO

NEW_ADDRESS = "new_address"
NEW_USER_AGENT = "new_user_agent"
SPEND_SPIKE = "spend_spike"
OVER_HOLD = "over_hold"  # an upstream reported usage beyond the hold: served, not charged
FLAG_KINDS = (NEW_ADDRESS, NEW_USER_AGENT, SPEND_SPIKE, OVER_HOLD)
SUBJECT_LENGTH = 300  # the longest subject a flag has (a user agent, bounded at the edge)

# A spend spike: a day's spend over SPIKE_FACTOR times the key's trailing daily average, and at
# least SPIKE_MINIMUM, so a small key's 0.01 credits a day becoming 0.05 is not an alert.
SPIKE_FACTOR = 3
TRAILING_DAYS = 7
SPIKE_MINIMUM = MICRO  # 1 credit


def is_spend_spike(spent: int, trailing_total: int, trailing_days: int) -> bool:
    """Whether a day's spend (micro-credits) is a spike against `trailing_total` spent over the
    `trailing_days` before it; a key with no spend in those days has no history: never one."""
    if trailing_days <= 0 or trailing_total <= 0 or spent < SPIKE_MINIMUM:
        return False
    return spent * trailing_days > SPIKE_FACTOR * trailing_total


class InvalidFlag(DomainError, ValueError):
    """Not a flag a key can have."""


def check_flag(kind: str, subject: str) -> tuple[str, str]:
    if kind not in FLAG_KINDS:
        raise InvalidFlag(f"unknown kind of flag {kind[:40]!r}")
    if not subject or len(subject) > SUBJECT_LENGTH:
        raise InvalidFlag(f"a flag's subject has 1 to {SUBJECT_LENGTH} characters")
    return kind, subject

"""Unexpected-usage flags: what kinds there are, and what acknowledging one needs.

The forensics projection raises flags from the usage history (see projections/forensics.py);
an owner acknowledges one ("that new address is our new server") with an event on the key, so
the acknowledgement is part of the key's history and survives any rebuild of the read models.
"""

from domain.errors import DomainError

NEW_ADDRESS = "new_address"
NEW_USER_AGENT = "new_user_agent"
SPEND_SPIKE = "spend_spike"
OVER_HOLD = "over_hold"  # an upstream reported usage beyond the hold: served, not charged
FLAG_KINDS = (NEW_ADDRESS, NEW_USER_AGENT, SPEND_SPIKE, OVER_HOLD)
SUBJECT_LENGTH = 300  # the longest subject a flag has (a user agent, bounded at the edge)


class InvalidFlag(DomainError, ValueError):
    """Not a flag a key can have."""


def check_flag(kind: str, subject: str) -> tuple[str, str]:
    if kind not in FLAG_KINDS:
        raise InvalidFlag(f"unknown kind of flag {kind[:40]!r}")
    if not subject or len(subject) > SUBJECT_LENGTH:
        raise InvalidFlag(f"a flag's subject has 1 to {SUBJECT_LENGTH} characters")
    return kind, subject

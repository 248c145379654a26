"""How long a rotated key may keep working: one rule for inference and management keys."""

from datetime import timedelta

from domain.errors import InvalidGrace

MAX_GRACE = timedelta(days=30)  # the longest rotation grace, of either kind of key


def check_grace(grace: timedelta) -> timedelta:
    """The grace itself when it is from 0 to MAX_GRACE, else InvalidGrace."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise InvalidGrace(f"grace must be between 0 and {MAX_GRACE.days} days")
    return grace

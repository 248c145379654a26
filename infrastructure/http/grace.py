"""The rotation grace as the edge takes it, for the API and the dashboard's two rotation forms:
a number of seconds from 0 to the domain's MAX_GRACE (domain.rotation, one rule for both kinds
of key)."""

import math
from datetime import timedelta

from domain.rotation import MAX_GRACE, check_grace
from infrastructure.http.limits import whole_number

MAX_GRACE_SECONDS = int(MAX_GRACE.total_seconds())
GRACE_RANGE = f"0 to {MAX_GRACE_SECONDS} ({MAX_GRACE.days} days)"


class BadGrace(ValueError):
    """Not a number of seconds (`wrong_type`), or one outside 0 to MAX_GRACE_SECONDS."""

    def __init__(self, *, wrong_type: bool) -> None:
        self.wrong_type = wrong_type
        super().__init__(f"the grace must be a number of seconds from {GRACE_RANGE}")


def grace_of(seconds: object) -> timedelta:
    """A JSON number of seconds (an int or a finite float, not a bool), within the bound."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise BadGrace(wrong_type=True)
    if not math.isfinite(seconds):
        raise BadGrace(wrong_type=True)
    if not 0 <= seconds <= MAX_GRACE_SECONDS:  # before timedelta, which overflows on 1e300
        raise BadGrace(wrong_type=False)
    return check_grace(timedelta(seconds=seconds))


def grace_of_form(text: str) -> timedelta:
    """A form's field: a whole number of seconds in ASCII digits (blank is 0), within the bound."""
    seconds = whole_number(text.strip() or "0", len(str(MAX_GRACE_SECONDS)))
    if seconds is None:
        raise BadGrace(wrong_type=True)
    return grace_of(seconds)


# What the dashboard's rotation forms say to a refused grace (the API names its field instead).
GRACE_FORM_ERROR = f"Enter a whole number of seconds from {GRACE_RANGE}."

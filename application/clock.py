"""Time is injected so day rollover and rotation grace can be tested without waiting."""

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def next_midnight(moment: datetime) -> datetime:
    """When daily limits reset: the next 00:00 UTC."""
    return datetime.combine(utc_day(moment) + timedelta(days=1), time(0), tzinfo=UTC)

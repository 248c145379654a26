"""The one time parser of the edges (API query times, CLI --since/--as-of, the dashboard's
usage filters and key expiry, the CLI's key ages)."""

from datetime import UTC, datetime, timedelta

import pytest

from infrastructure.http.dashboard.usage import parse_moment
from infrastructure.times import parse_time_text


def test_a_time_without_a_zone_is_utc_and_a_date_alone_is_its_midnight() -> None:
    assert parse_time_text("2026-01-31T12:00:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert parse_time_text(" 2026-01-31 ") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_time_text("2026-01-31T12:00:00Z") == datetime(2026, 1, 31, 12, tzinfo=UTC)


def test_a_zone_given_is_kept() -> None:
    moment = parse_time_text("2026-01-31T12:00:00+02:00")
    assert moment.utcoffset() == timedelta(hours=2)
    assert moment == datetime(2026, 1, 31, 10, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "2026-01-31T25:00"])
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_text(text)


def test_a_date_as_the_end_of_a_range_includes_that_day() -> None:
    assert parse_time_text("2026-01-31", end_of_day=True) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_time_text("2026-01-31T12:00", end_of_day=True) == datetime(
        2026, 1, 31, 12, tzinfo=UTC
    )


def test_the_dashboards_usage_filter_is_the_same_parser() -> None:
    assert parse_moment("  ") is None
    assert parse_moment("2026-01-31") == parse_time_text("2026-01-31")
    assert parse_moment("2026-01-31", end_of_day=True) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_moment("2026-01-31T08:00+01:00") == datetime(2026, 1, 31, 7, tzinfo=UTC)
    with pytest.raises(ValueError, match="must be a day"):
        parse_moment("yesterday")

"""The CLI's argument types, pure: a time given as how long ago uses the same units as a key's
lifetime (domain.policy.SECONDS_PER_UNIT)."""

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from domain.policy import parse_duration
from infrastructure.cli.arguments import parse_time


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_a_time_ago_counts_back_from_now(text: str, ago: timedelta) -> None:
    before = datetime.now(UTC)
    moment = parse_time(text)
    after = datetime.now(UTC)
    assert before - ago <= moment <= after - ago


def test_a_time_ago_and_a_keys_lifetime_mean_the_same_by_each_unit() -> None:
    for text in ("45s", "30m", "2h", "7d", "1w"):
        now = datetime.now(UTC)
        assert abs((now - parse_time(text)) - parse_duration(text)) < timedelta(seconds=5)


def test_a_time_that_is_neither_iso_nor_an_age_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("2 fortnights")

"""The edge's one grace parser: what the API's `grace_seconds` and the dashboard's two rotation
forms accept, bounded by the domain's MAX_GRACE."""

from datetime import timedelta
from typing import Any

import pytest

from domain.rotation import MAX_GRACE
from infrastructure.http.grace import (
    GRACE_FORM_ERROR,
    MAX_GRACE_SECONDS,
    BadGrace,
    grace_of,
    grace_of_form,
)


def test_the_edge_bound_is_the_domains() -> None:
    assert timedelta(seconds=MAX_GRACE_SECONDS) == MAX_GRACE
    assert GRACE_FORM_ERROR == "Enter a whole number of seconds from 0 to 2592000 (30 days)."


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, timedelta(0)), (90, timedelta(seconds=90)), (1.5, timedelta(seconds=1.5)),
     (MAX_GRACE_SECONDS, MAX_GRACE)],
)  # fmt: skip
def test_the_api_takes_a_number_of_seconds(seconds: Any, expected: timedelta) -> None:
    assert grace_of(seconds) == expected


@pytest.mark.parametrize(
    ("seconds", "wrong_type"),
    [(-1, False), (MAX_GRACE_SECONDS + 1, False), (1e300, False), (float("nan"), True),
     (float("inf"), True), ("60", True), (True, True), (None, True), ([60], True)],
)  # fmt: skip
def test_the_api_refuses_what_is_not_a_grace(seconds: Any, wrong_type: bool) -> None:
    with pytest.raises(BadGrace) as refused:
        grace_of(seconds)
    assert refused.value.wrong_type is wrong_type


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", timedelta(0)), ("  ", timedelta(0)), ("0", timedelta(0)),
     (" 3600 ", timedelta(hours=1)), (str(MAX_GRACE_SECONDS), MAX_GRACE)],
)  # fmt: skip
def test_a_form_takes_a_whole_number_of_seconds(text: str, expected: timedelta) -> None:
    assert grace_of_form(text) == expected


@pytest.mark.parametrize("text", ["-5", "1.5", "²", "60s", str(MAX_GRACE_SECONDS + 1), "9" * 5000])
def test_a_form_refuses_anything_else(text: str) -> None:
    with pytest.raises(BadGrace):
        grace_of_form(text)

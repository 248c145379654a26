"""The dashboard's one money format: every amount has six decimals, parses back to exactly
itself, and carries its unit with the right number ("1.000000 credit", "2.000000 credits")."""

import re

from hypothesis import given
from hypothesis import strategies as st

from domain.money import MAX_CREDITS, MICRO, parse_credits
from infrastructure.http.dashboard.money import credits, money, per_day, plural

AMOUNTS = st.integers(min_value=0, max_value=MAX_CREDITS * MICRO)
SHAPE = re.compile(r"^(0|[1-9][0-9]*)\.[0-9]{6}$")


@given(AMOUNTS)
def test_every_amount_has_six_decimals_and_parses_back_exactly(micro: int) -> None:
    text = money(micro)
    assert SHAPE.match(text), text
    assert parse_credits(text) == micro


@given(st.lists(AMOUNTS, min_size=2, max_size=20))
def test_a_column_of_amounts_lines_up_on_the_decimal_point(column: list[int]) -> None:
    decimals = {len(money(m).partition(".")[2]) for m in column}
    assert decimals == {6}


@given(AMOUNTS)
def test_an_amount_with_its_unit_is_singular_for_exactly_one_credit(micro: int) -> None:
    text = credits(micro)
    number, unit = text.split(" ")
    assert parse_credits(number) == micro
    assert unit == ("credit" if micro == MICRO else "credits")


def test_limits_and_counts_read_as_english() -> None:
    assert per_day(MICRO) == "1.000000 credit a day"
    assert per_day(2 * MICRO) == "2.000000 credits a day"
    assert credits(13) == "0.000013 credits"
    assert money(10) == "0.000010"  # beside 0.000013: the same digits, no "0.00001"
    assert [plural(n, "request") for n in (0, 1, 2)] == ["0 requests", "1 request", "2 requests"]
    assert plural(1, "day") == "1 day" and plural(3, "key") == "3 keys"

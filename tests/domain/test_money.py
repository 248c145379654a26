"""Credits: integer micro-credits inside, six-place decimal strings outside, never a float."""

import math
import re
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from domain.errors import InvalidAmount
from domain.money import MAX_CREDITS, MICRO, cost_of, format_credits, parse_credits

MAX_MICRO = MAX_CREDITS * MICRO
micro_amounts = st.integers(min_value=0, max_value=MAX_MICRO)
token_counts = st.integers(min_value=0, max_value=10**9)
prices = st.integers(min_value=0, max_value=10**12)  # micro-credits per million tokens


# Round trip ---------------------------------------------------------------------------------


@given(micro_amounts)
def test_format_then_parse_gives_back_the_same_micro_credits(micro: int) -> None:
    assert parse_credits(format_credits(micro)) == micro


@given(micro_amounts)
def test_formatted_credits_have_exactly_six_decimal_places(micro: int) -> None:
    text = format_credits(micro)
    assert re.fullmatch(r"(0|[1-9][0-9]*)\.[0-9]{6}", text)
    assert Decimal(text) * MICRO == micro


@given(st.integers(0, MAX_CREDITS - 1), st.integers(0, 6), st.data())
def test_decimal_strings_with_up_to_six_places_parse_exactly(
    whole: int, places: int, data: st.DataObject
) -> None:
    fraction = data.draw(st.integers(0, 10**places - 1)) if places else 0
    text = f"{whole}.{fraction:0{places}d}" if places else str(whole)
    expected = whole * MICRO + fraction * 10 ** (6 - places)
    assert parse_credits(text) == expected
    assert parse_credits(f"  {text}\n") == expected  # surrounding whitespace is tolerated


def test_known_amounts() -> None:
    assert format_credits(5_000_000) == "5.000000"
    assert format_credits(1) == "0.000001"
    assert format_credits(0) == "0.000000"
    assert format_credits(-1_500_000) == "-1.500000"
    assert parse_credits("5") == 5_000_000
    assert parse_credits("0.000001") == 1
    assert parse_credits(5) == 5_000_000
    assert parse_credits(Decimal("2.5")) == 2_500_000
    assert parse_credits(0.1) == 100_000  # a float is read by its shortest repr, not its binary
    assert parse_credits("1E+3") == 1_000 * MICRO
    assert parse_credits(str(MAX_CREDITS)) == MAX_MICRO


# Refusals -----------------------------------------------------------------------------------


@given(st.integers(1, MAX_MICRO))
def test_negative_amounts_are_refused(micro: int) -> None:
    with pytest.raises(InvalidAmount, match="negative"):
        parse_credits("-" + format_credits(micro))
    with pytest.raises(InvalidAmount):
        parse_credits(-micro)


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "five", "1,5", "1.2.3", "0x10", "5 credits", "$5", "--1", "1e", "½", "None"],
)
def test_non_numeric_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidAmount, match="not a number"):
        parse_credits(text)


@given(st.text(alphabet=st.characters(exclude_categories=["Nd"]), min_size=1, max_size=20))
def test_text_without_digits_is_refused(text: str) -> None:
    assume(text.strip().lower().lstrip("+-") not in {"nan", "snan", "inf", "infinity"})
    with pytest.raises(InvalidAmount):
        parse_credits(text)


@pytest.mark.parametrize(
    "value",
    [
        "nan",
        "NaN",
        "-nan",
        "sNaN",
        "inf",
        "-inf",
        "Infinity",
        "-Infinity",
        float("nan"),
        float("inf"),
        float("-inf"),
        Decimal("NaN"),
        Decimal("Infinity"),
    ],
)
def test_nan_and_infinity_are_refused(value: str | float | Decimal) -> None:
    with pytest.raises(InvalidAmount):
        parse_credits(value)  # type: ignore[arg-type]


# Up to 12 whole digits and 16 places: at most 28 significant digits.
@given(
    st.integers(0, MAX_CREDITS - 1),
    st.integers(7, 16),
    st.data(),
)
def test_more_than_six_decimal_places_are_refused_not_rounded(
    whole: int, places: int, data: st.DataObject
) -> None:
    fraction = data.draw(st.integers(0, 10**places - 1).filter(lambda f: f % 10 ** (places - 6)))
    text = f"{whole}.{fraction:0{places}d}"
    with pytest.raises(InvalidAmount, match="6 decimal places"):
        parse_credits(text)


@pytest.mark.parametrize(
    "text", ["1.0000000000000000000000000001", "100000000.00000000000000000001"]
)
def test_long_amount_with_digits_past_the_sixth_place_is_refused_not_rounded(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_credits(text)


def test_amount_far_below_one_micro_credit_is_refused_not_rounded_to_zero() -> None:
    with pytest.raises(InvalidAmount):
        parse_credits("1e-999999999")


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_refused(value: bool) -> None:
    with pytest.raises(InvalidAmount):
        parse_credits(value)


def test_amount_above_the_sanity_bound_is_refused() -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        parse_credits(str(MAX_CREDITS + 1))
    with pytest.raises(InvalidAmount, match="too large"):
        parse_credits("1e100")


def test_zero_is_refused_only_when_not_allowed() -> None:
    assert parse_credits("0") == 0
    assert parse_credits("0.000000") == 0
    with pytest.raises(InvalidAmount, match="greater than zero"):
        parse_credits("0", allow_zero=False)
    assert parse_credits("0.000001", allow_zero=False) == 1


def test_refusals_are_value_errors() -> None:
    assert issubclass(InvalidAmount, ValueError)


# Cost ---------------------------------------------------------------------------------------


@given(token_counts, prices)
def test_cost_of_rounds_up_to_the_next_micro_credit(tokens: int, price: int) -> None:
    exact = Fraction(tokens * price, 1_000_000)
    assert cost_of(tokens, price) == math.ceil(exact)
    assert cost_of(tokens, price) >= exact


@given(st.integers(1, 10**9), st.integers(1, 10**12))
def test_any_nonzero_usage_at_a_nonzero_price_costs_something(tokens: int, price: int) -> None:
    assert cost_of(tokens, price) >= 1


@given(token_counts, token_counts, prices)
def test_cost_is_monotonic_in_tokens(first: int, second: int, price: int) -> None:
    low, high = sorted((first, second))
    assert cost_of(low, price) <= cost_of(high, price)


@given(token_counts, prices, prices)
def test_cost_is_monotonic_in_price(tokens: int, first: int, second: int) -> None:
    low, high = sorted((first, second))
    assert cost_of(tokens, low) <= cost_of(tokens, high)


def test_known_costs() -> None:
    price = parse_credits("2.50")  # credits per million tokens
    assert cost_of(1_000_000, price) == 2_500_000
    assert cost_of(1, price) == 3  # 2.5 micro-credits, rounded up
    assert cost_of(0, price) == 0
    assert cost_of(400, 1) == 1

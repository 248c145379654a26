"""Credits are integer micro-credits inside and decimal strings ("5.000000") at the edges."""

from decimal import Decimal, InvalidOperation

from domain.errors import InvalidAmount

MICRO = 1_000_000
MAX_CREDITS = 10**12  # a sanity bound: no account holds a trillion credits


def parse_credits(text: str | int | float | Decimal, *, allow_zero: bool = True) -> int:
    """Parse a non-negative decimal amount of credits into micro-credits.

    More than six decimal places is refused rather than silently rounded.
    """
    if isinstance(text, bool):
        raise InvalidAmount(f"not a number of credits: {text!r}")
    if isinstance(text, float):
        text = repr(text)
    try:
        amount = Decimal(str(text).strip())
    except (InvalidOperation, ValueError):
        raise InvalidAmount(f"not a number of credits: {str(text)[:40]!r}") from None
    if not amount.is_finite():
        raise InvalidAmount(f"not a number of credits: {str(text)[:40]!r}")
    if amount < 0:
        raise InvalidAmount(f"a credit amount cannot be negative: {text}")
    if amount > MAX_CREDITS:
        raise InvalidAmount(f"credit amount too large: {text}")
    micro = _exact_micro(amount)
    if micro is None:
        raise InvalidAmount(f"credits have at most 6 decimal places: {str(text)[:40]}")
    if not allow_zero and micro == 0:
        raise InvalidAmount("the amount must be greater than zero")
    return int(micro)


def _exact_micro(amount: Decimal) -> int | None:
    """The amount in micro-credits, exactly, or None if it has digits past the sixth place.

    Integer arithmetic on the digits, so no Decimal context can round or underflow it.
    """
    _sign, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + 6
    if shift >= 0:
        multiplier: int = 10**shift
        return coefficient * multiplier
    if coefficient == 0:
        return 0
    if -shift > len(digits):  # dividing by more digits than it has: a fraction remains
        return None
    divisor: int = 10**-shift
    whole, remainder = divmod(coefficient, divisor)
    return None if remainder else whole


def format_credits(micro: int) -> str:
    """Render micro-credits as a decimal string with six places: 5000000 -> "5.000000"."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def parse_price_per_million(text: str | int | float) -> int:
    """A price in credits per million tokens, as micro-credits per million tokens."""
    return parse_credits(text)


def cost_of(tokens: int, price_micro_per_million: int) -> int:
    """Micro-credits for `tokens` at a price per million tokens, rounded up (never undercharge)."""
    return -(-tokens * price_micro_per_million // 1_000_000)

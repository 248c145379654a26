"""The dashboard's one way to show money and counts.

Every amount has the same six decimals (a micro-credit is the ledger's unit, so nothing is
rounded and a column of costs lines up), parses back to exactly the amount it shows, and carries
its unit where it stands alone: "1.000000 credit", "0.000013 credits". Counts get correct plurals.
"""

from domain.money import MICRO, format_credits


def money(micro: int) -> str:
    """An amount of credits for people: always six decimals, "0.000013", "12.500000"."""
    return format_credits(micro)


def credits(micro: int) -> str:
    """An amount with its unit: "1.000000 credit", "2.500000 credits"."""
    return f"{money(micro)} {'credit' if micro == MICRO else 'credits'}"


def plural(count: int, word: str, many: str | None = None) -> str:
    """ "1 request", "2 requests", "0 keys"; `many` for irregular plurals."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def per_day(micro: int) -> str:
    """A daily limit: "1.000000 credit a day"."""
    return f"{credits(micro)} a day"


def per_month(micro: int) -> str:
    """A monthly limit: "30.000000 credits a month"."""
    return f"{credits(micro)} a month"

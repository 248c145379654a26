"""The inference API's answers to the ledger's refusals of a reservation
(infrastructure.http.refusals), pure: each one's status and code (the error table's, which are
the reasons the ledger records), its words, and which carry retry-after or x-should-retry."""

from datetime import UTC, datetime
from typing import Any

import pytest

from application.metering import REFUSALS
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    MonthlyLimitExceeded,
    NotFound,
    RateLimitExceeded,
    TooManyKeys,
)
from infrastructure.error_table import TABLE
from infrastructure.http.refusals import refusal_error

NOW = datetime(2026, 12, 31, 22, 15, tzinfo=UTC)
KEY = "lr-sk-AbCd…wXyZ"
NO_RETRY = {"x-should-retry": "false"}

ANSWERS: list[tuple[DomainError, Any, int, str, str, dict[str, str]]] = [
    (
        InsufficientCredits(1_500_000, 250_000, 2_000_000),
        64,
        402,
        "insufficient_credits",
        "Not enough credits: the account balance is 1.500000 with 0.250000 held by requests in "
        "flight, and this request could cost up to 2.000000. Add credits or a lower max_tokens.",
        NO_RETRY,
    ),
    (
        InsufficientCredits(1, 2, 3),
        None,
        402,
        "insufficient_credits",
        "Not enough credits: the account balance is 0.000001 with 0.000002 held by requests in "
        "flight, and this request could cost up to 0.000003. Add credits or set a lower "
        "max_tokens.",
        NO_RETRY,
    ),
    (
        DailyLimitExceeded(900_000, 50_000, 1_000_000, 100_000),
        None,
        429,
        "daily_limit_exceeded",
        f"Daily limit reached for key {KEY}: spent 0.900000 and 0.050000 held of 1.000000 today; "
        "this request could cost up to 0.100000. The limit resets at 2027-01-01T00:00:00Z "
        "(00:00 UTC).",
        NO_RETRY,
    ),
    (
        MonthlyLimitExceeded(9_000_000, 0, 10_000_000, 2_000_000),
        None,
        429,
        "monthly_limit_exceeded",
        f"Monthly limit reached for key {KEY}: spent 9.000000 and 0.000000 held of 10.000000 "
        "this month (UTC); this request could cost up to 2.000000. The limit resets at "
        "2027-01-01T00:00:00Z.",
        NO_RETRY,
    ),
    (
        RateLimitExceeded("tokens", 1000, 990, 12.2),
        None,
        429,
        "rate_limit_exceeded",
        f"Rate limit reached for key {KEY}: 990 tokens of 1000 per minute used in the last 60 s. "
        "Try again in 13 s.",
        {"retry-after": "13"},
    ),
    (
        RateLimitExceeded("tokens", 1000, 0, None),
        None,
        429,
        "rate_limit_exceeded",
        f"This request alone could use more than the 1000 tokens per minute key {KEY} may use; "
        "lower max_tokens or the prompt.",
        NO_RETRY,
    ),
    (
        ConcurrencyLimitExceeded(4),
        None,
        429,
        "concurrency_limit_exceeded",
        f"Key {KEY} already has 4 requests in flight (max_concurrent); try again when one has "
        "finished.",
        {"retry-after": "1"},
    ),
]


@pytest.mark.parametrize(
    ("refusal", "max_tokens", "status", "code", "message", "headers"),
    ANSWERS,
    ids=lambda value: type(value).__name__ if isinstance(value, DomainError) else None,
)
def test_each_refusal_is_answered_with_its_status_code_words_and_headers(
    refusal: DomainError,
    max_tokens: Any,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str],
) -> None:
    answer = refusal_error(refusal, KEY, NOW, max_tokens)
    assert answer is not None
    assert (answer.status, answer.code, answer.message, answer.headers) == (
        status,
        code,
        message,
        headers,
    )
    # The code the client reads is the reason the ledger records, and the error table's.
    assert REFUSALS[type(refusal)] == code == TABLE[type(refusal)].code


def test_every_refusal_of_the_ledger_has_an_answer_here() -> None:
    assert {type(refusal) for refusal, *_ in ANSWERS} == set(REFUSALS)


def test_other_errors_are_not_answered_here() -> None:
    assert refusal_error(TooManyKeys(3), KEY, NOW, None) is None
    assert refusal_error(NotFound("no key"), KEY, NOW, None) is None

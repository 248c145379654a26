"""The ledger's refusals of a reservation (application.metering.REFUSALS) as API answers
(OpenAI's shape and headers), in one place: their words (their status and code are the error
table's, infrastructure.error_table), which carry `retry-after` (only those a wait can cure) and
which `x-should-retry: false` (the rest), and the x-ratelimit-* headers of a metered key."""

import math
from datetime import UTC, datetime, time, timedelta
from typing import Any

from application.clock import next_midnight, utc_day
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    DomainError,
    InsufficientCredits,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.ledger import RateStatus
from domain.money import format_credits
from infrastructure.error_table import answer_to
from infrastructure.http.errors import ApiError


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def next_month(moment: datetime) -> datetime:
    """When monthly limits reset: 00:00 UTC on the next month's first day."""
    day = utc_day(moment)
    first = (
        day.replace(year=day.year + 1, month=1, day=1)
        if day.month == 12
        else day.replace(month=day.month + 1, day=1)
    )
    return datetime.combine(first, time(0), tzinfo=UTC)


def _seconds(delta: timedelta | float) -> int:
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else delta
    return max(1, math.ceil(seconds))


def refusal_error(
    refusal: DomainError, display: str, now: datetime, max_tokens: Any
) -> ApiError | None:
    """The answer to one of the reservation's refusals, or None for any other error: its status
    and code from the one error table, its words here."""
    answer = answer_to(refusal)
    status, code = answer.status, answer.code
    if isinstance(refusal, InsufficientCredits):
        lower = " or a lower max_tokens" if max_tokens else " or set a lower max_tokens"
        return ApiError(
            status,
            code,
            f"Not enough credits: the account balance is {format_credits(refusal.balance)} "
            f"with {format_credits(refusal.held)} held by requests in flight, and this request "
            f"could cost up to {format_credits(refusal.needed)}. Add credits{lower}.",
        )
    if isinstance(refusal, DailyLimitExceeded):
        reset = next_midnight(now)
        # No retry-after (until 0.3 it said "until midnight"): a client that honours it waits
        # hours (openai-node 6 sleeps the whole of it) instead of failing at once.
        return ApiError(
            status,
            code,
            f"Daily limit reached for key {display}: spent "
            f"{format_credits(refusal.spent)} and {format_credits(refusal.held)} held of "
            f"{format_credits(refusal.limit)} today; this request could cost up to "
            f"{format_credits(refusal.needed)}. The limit resets at {_iso(reset)} (00:00 UTC).",
            retryable=False,
        )
    if isinstance(refusal, MonthlyLimitExceeded):
        reset = next_month(now)
        return ApiError(
            status,
            code,
            f"Monthly limit reached for key {display}: spent "
            f"{format_credits(refusal.spent)} and {format_credits(refusal.held)} held of "
            f"{format_credits(refusal.limit)} this month (UTC); this request could cost up to "
            f"{format_credits(refusal.needed)}. The limit resets at {_iso(reset)}.",
            retryable=False,
        )
    if isinstance(refusal, RateLimitExceeded):
        if refusal.retry_after is None:
            return ApiError(
                status,
                code,
                f"This request alone could use more than the {refusal.limit} tokens per minute "
                f"key {display} may use; lower max_tokens or the prompt.",
                retryable=False,
            )
        wait = _seconds(refusal.retry_after)
        return ApiError(
            status,
            code,
            f"Rate limit reached for key {display}: {refusal.used} {refusal.what} of "
            f"{refusal.limit} per minute used in the last 60 s. Try again in {wait} s.",
            headers={"retry-after": str(wait)},
        )
    if isinstance(refusal, ConcurrencyLimitExceeded):
        return ApiError(
            status,
            code,
            f"Key {display} already has {refusal.limit} requests in flight (max_concurrent); "
            "try again when one has finished.",
            headers={"retry-after": "1"},
        )
    return None


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `250ms`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def rate_headers(status: RateStatus | None) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits the key has."""
    if status is None:
        return {}
    headers = {}
    if status.requests_limit is not None and status.requests_remaining is not None:
        headers["x-ratelimit-limit-requests"] = str(status.requests_limit)
        headers["x-ratelimit-remaining-requests"] = str(status.requests_remaining)
        headers["x-ratelimit-reset-requests"] = _duration(status.requests_reset)
    if status.tokens_limit is not None and status.tokens_remaining is not None:
        headers["x-ratelimit-limit-tokens"] = str(status.tokens_limit)
        headers["x-ratelimit-remaining-tokens"] = str(status.tokens_remaining)
        headers["x-ratelimit-reset-tokens"] = _duration(status.tokens_reset)
    return headers

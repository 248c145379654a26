"""argparse types for what the command line carries: key ids, times, amounts, counts, seconds."""

import argparse
import math
import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

from domain.money import parse_credits
from domain.policy import SECONDS_PER_UNIT
from infrastructure.cli.errors import _TOKEN_LIKE, redact_tokens
from infrastructure.times import parse_time_text

# Key ids and amounts on the command line ----------------------------------------------------------


def parse_key_id(text: str) -> UUID:
    """argparse type for KEY_ID: a malformed id is a usage error, and never echoes a token."""
    if _TOKEN_LIKE.match(text):
        raise argparse.ArgumentTypeError(
            f"{redact_tokens(text)} is a token, not a key id; 'lowrouter keys list' shows key ids"
        )
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a key id (a UUID): {text[:40]!r}") from None


def optional_credits(text: str | None) -> int | None:
    return parse_credits(text) if text is not None else None


# Times and signed amounts on the command line ---------------------------------------------------

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_time(text: str) -> datetime:
    """argparse type for times: ISO 8601 (without a zone it is UTC; a date alone is its
    midnight), or how long ago: `30m`, `2h`, `7d`, `1w`."""
    stripped = text.strip()
    ago = _AGO.fullmatch(stripped)
    if ago:
        seconds = float(ago.group(1)) * SECONDS_PER_UNIT[ago.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        return parse_time_text(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text[:40]!r} (ISO 8601 such as 2026-01-31T12:00:00Z, or an age "
            "such as 90m, 2h, 7d)"
        ) from None


def parse_signed_credits(text: str) -> int:
    """`-1.5` or `+2` or `2` credits, as signed micro-credits (never zero)."""
    stripped = text.strip()
    sign = -1 if stripped.startswith("-") else 1
    magnitude = parse_credits(stripped.removeprefix("-").removeprefix("+"), allow_zero=False)
    return sign * magnitude


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}")
    return seconds

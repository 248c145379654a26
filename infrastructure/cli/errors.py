"""The CLI's two errors (usage: exit 2; refused: exit 1), and keeping tokens and passwords out of
what it prints.
"""

import re

from domain.tokens import display_of
from infrastructure.settings import mask_passwords, masked_url

_TOKEN_LIKE = re.compile(r"lr-(?:sk|mk)-[0-9A-Za-z]*+(?!…)")  # not one already shown as display


# Errors ----------------------------------------------------------------------------------------


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


class Refused(Exception):
    """The command cannot be done as asked (exit 1)."""


def redact_tokens(text: str) -> str:
    """Reduce anything token-shaped to its display form, so no error can leak a token."""

    def shorten(match: re.Match[str]) -> str:
        found = match.group(0)
        return display_of(found) if len(found) >= 14 else found[:6] + "…"

    return _TOKEN_LIKE.sub(shorten, text)


def without_password(database_url: str) -> str:
    return masked_url(database_url)


def one_line(text: str) -> str:
    """An error as printed: one line, tokens shortened, passwords masked, control characters
    gone (an error may quote outside text)."""
    return " ".join(mask_passwords(redact_tokens(text)).split())

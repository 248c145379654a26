"""Removing secrets from text that came from outside before we show it to anyone: an upstream's
error message may echo our provider credential, a client's token or someone else's key.

`redact(text, secrets)` removes each given secret, bearer credentials, lowrouter tokens and any
other token-like string (a long run of key characters mixing letters and digits), strips control
characters, and bounds the length. What is left is safe to relay; it may say less than the
original, never more.
"""

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MAX_RELAYED = 300
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)\s+[^\s\"',;]+")
_KEY_ASSIGNMENT = re.compile(
    r"(?i)\b(api[_-]?key|x-api-key|authorization|password|secret|token)(\"?\s*[:=]\s*\"?)"
    r"[^\s\"',;}]+"
)
# A token-like run: characters of the alphabets keys use, with a stretch of 16+ between
# separators mixing letters and digits (keys, JWTs, hashes; not model names or UUIDs).
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-+/=.~]{16,}")
_SEPARATORS = re.compile(r"[-_./~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _token_like(match: re.Match[str]) -> str:
    run = match.group(0)
    for stretch in _SEPARATORS.split(run):
        if (
            len(stretch) >= 16
            and any(c.isalpha() for c in stretch)
            and any(c.isdigit() for c in stretch)
        ):
            return REDACTED
    return run


def redact(text: str, secrets: Iterable[str | None] = (), limit: int = MAX_RELAYED) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _CONTROL.sub(" ", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _KEY_ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _TOKEN_LIKE.sub(_token_like, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_SECRET_LIKE = re.compile(r"[0-9a-fA-F]{24,}|[A-Za-z0-9+/_=-]{40,}")


def safe_error_text(error: BaseException, limit: int = 300) -> str:
    """An error as it may be stored, logged and shown: its first line, without the SQL and
    the bound parameters a driver appends (they may hold token hashes), with anything
    hash-shaped cut out. Log this, never the error's traceback."""
    text = str(error).split("\n", 1)[0]
    for marker in ("[SQL:", "[parameters:", "DETAIL:"):
        text = text.split(marker, 1)[0]
    text = _SECRET_LIKE.sub("…", text).strip()
    return f"{type(error).__name__}: {text}"[:limit]

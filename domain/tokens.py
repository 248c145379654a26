"""Bearer tokens: `lr-sk-` (inference) or `lr-mk-` (management), 32 random base62 characters and a
6-character base62 CRC32 checksum of the random part.

Parsing rejects a wrong prefix, length, alphabet or checksum before anything touches a database.
Tokens are stored only as HMAC-SHA256 under a server secret (the pepper).
"""

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass
from enum import Enum

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
RANDOM_LENGTH = 32  # 32 * log2(62) ≈ 190 bits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits
PREFIX_LENGTH = 6  # "lr-sk-"
TOKEN_LENGTH = PREFIX_LENGTH + RANDOM_LENGTH + CHECKSUM_LENGTH  # 44
_ALPHABET_SET = frozenset(ALPHABET)


class TokenKind(Enum):
    INFERENCE = "lr-sk-"
    MANAGEMENT = "lr-mk-"

    @property
    def code(self) -> str:
        """The two letters the read models keep for the kind: "sk" or "mk"."""
        return self.value[3:5]

    @classmethod
    def of_code(cls, code: str) -> "TokenKind":
        """The kind a read model's two letters stand for (ValueError for any other)."""
        try:
            return _KINDS_BY_CODE[code]
        except KeyError:
            raise ValueError(f"not a kind of token: {code[:8]!r}") from None


_KINDS_BY_CODE = {kind.code: kind for kind in TokenKind}  # read on every authenticated request


class TokenFormatError(ValueError):
    """A string that cannot be a lowrouter token. The message never contains the token."""


@dataclass(frozen=True, slots=True)
class Token:
    """A well-formed token. Keep it in memory only; store `hash_token(...)` of it."""

    kind: TokenKind
    value: str

    @property
    def display(self) -> str:
        return display_of(self.value)

    @property
    def last4(self) -> str:
        return self.value[-4:]

    def __repr__(self) -> str:  # never leak a token through a log line or traceback
        return f"Token({self.kind.name}, {self.display})"

    __str__ = __repr__


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def generate_token(kind: TokenKind) -> Token:
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return Token(kind, kind.value + random_part + checksum(random_part))


def parse_token(text: str) -> Token:
    """Validate a candidate token's shape and checksum; raise TokenFormatError naming the fault."""
    kind = next((k for k in TokenKind if text.startswith(k.value)), None)
    if kind is None:
        raise TokenFormatError("the key does not start with lr-sk- or lr-mk-")
    body = text[PREFIX_LENGTH:]
    if len(text) != TOKEN_LENGTH:
        raise TokenFormatError(
            f"the key has {len(text)} characters; lowrouter keys have {TOKEN_LENGTH}"
        )
    if not _ALPHABET_SET.issuperset(body):
        raise TokenFormatError("the key contains characters that are not letters or digits")
    random_part, check = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    if not hmac.compare_digest(checksum(random_part), check):
        raise TokenFormatError("the key's checksum does not match: it was mistyped or truncated")
    return Token(kind, text)


def display_of(token: str) -> str:
    """`lr-sk-AbCd…wXyZ`: the prefix, four characters and the last four."""
    return f"{token[: PREFIX_LENGTH + 4]}…{token[-4:]}"


def hash_token(pepper: bytes, token: Token) -> str:
    """Deterministic keyed hash, so it can be indexed; hex for portable storage."""
    return hmac.new(pepper, token.value.encode("ascii"), hashlib.sha256).hexdigest()

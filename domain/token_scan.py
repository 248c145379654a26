"""Finding lowrouter tokens in text: the prefix, 38 base62 characters, and a checksum that
matches, so a string that only looks like a token is never reported.

TOKEN_REGEX is the pattern published for secret scanners (README, "When a key leaks"): exactly
our format, `lr-sk-` or `lr-mk-` and 32 random + 6 checksum base62 characters, between word
boundaries. The finder matches exactly what it matches (then checks the checksum), searching for
the literal prefix first, which is what makes it fast (see README for the figure).
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

from domain.tokens import CHECKSUM_LENGTH, RANDOM_LENGTH, Token, TokenFormatError, parse_token

BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH  # 38
TOKEN_REGEX = r"\blr-(?:sk|mk)-[0-9A-Za-z]{38}\b"  # 38 == BODY_LENGTH (tests hold it so)
_CANDIDATE = re.compile(rb"lr-(?:sk|mk)-[0-9A-Za-z]{38}")
_WORD = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")


@dataclass(frozen=True, slots=True)
class Found:
    offset: int  # where the token starts in the data
    token: Token  # never print it: `token.display`

    def line_in(self, data: bytes) -> int:
        return data.count(b"\n", 0, self.offset) + 1


def find_tokens(data: bytes) -> Iterator[Found]:
    """Every real-format token in `data` (the checksum matches), in order."""
    if b"lr-" not in data:
        return
    for match in _CANDIDATE.finditer(data):
        start, end = match.span()
        if (start > 0 and data[start - 1] in _WORD) or (end < len(data) and data[end] in _WORD):
            continue  # not on a word boundary: part of a longer string
        try:
            token = parse_token(match.group().decode("ascii"))
        except TokenFormatError:
            continue  # the right shape, the wrong checksum
        yield Found(start, token)

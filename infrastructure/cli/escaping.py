"""Showing outside text on a terminal safely."""

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """Control characters shown escaped (\\x1b, \\n), so a value from outside (a revoke reason,
    a user agent, a name) can neither drive the terminal nor fake a line of output."""

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        if keep_newlines and char == "\n":
            return char
        return char.encode("unicode_escape").decode("ascii")

    return _CONTROL.sub(escape, text)

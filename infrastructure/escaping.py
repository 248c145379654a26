"""Showing outside text safely: on a terminal, and in a CSV file a spreadsheet opens."""

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FORMULA_STARTS = ("=", "+", "-", "@")  # a spreadsheet runs a cell starting so as a formula


def printable(text: str, keep_newlines: bool = False) -> str:
    """Control characters shown escaped (\\x1b, \\n), so a value from outside (a revoke reason,
    a user agent, a name) can neither drive the terminal nor fake a line of output."""

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        if keep_newlines and char == "\n":
            return char
        return char.encode("unicode_escape").decode("ascii")

    return _CONTROL.sub(escape, text)


def csv_cell(value: Any) -> str:
    """One CSV cell (CLI and dashboard alike): empty for None, true/false, control characters
    escaped (no fake rows, no terminal escapes when the file is printed), and text a spreadsheet
    would run as a formula ("=cmd|…") behind a leading apostrophe, as OWASP advises."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return str(value)
    text = printable(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text

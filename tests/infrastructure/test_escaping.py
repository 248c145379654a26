"""CSV cells from outside values (user agents, key names) cannot fake rows, drive a terminal
when the file is printed, or run as a spreadsheet formula (CLI and dashboard share the rule)."""

import csv
import io
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.cli import usage as cli_usage
from infrastructure.escaping import csv_cell
from infrastructure.http.dashboard import usage as dashboard_usage


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (None, ""),
        (True, "true"),
        (12, "12"),
        ("curl/8.0", "curl/8.0"),
        ("evil\nfake,row", "evil\\nfake,row"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\rb\u2028c", "a\\rb\\u2028c"),
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("@SUM(1)", "'@SUM(1)"),
        ("\t=1", "\\t=1"),  # escaped first: no longer a formula, nor a tab
    ],
)
def test_a_cell_is_escaped_and_defused(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


@given(st.text())
def test_any_text_is_one_line_without_control_characters(text: str) -> None:
    cell = csv_cell(text)
    assert not any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in cell)
    buffer = io.StringIO()
    csv.writer(buffer).writerow([cell, "next"])
    assert buffer.getvalue().count("\n") == 1


def test_the_cli_and_the_dashboard_use_the_one_rule() -> None:
    assert cli_usage.csv_cell is csv_cell and dashboard_usage.cell is csv_cell

"""Times as the edges take them: one parser for the API, the dashboard and the CLI."""

from datetime import UTC, date, datetime, timedelta


def parse_time_text(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 time, aware: without a zone it is UTC; a date alone is its midnight (with
    `end_of_day`, the next midnight: a date as the end of a range includes that day).
    Raises ValueError (each edge words its own refusal)."""
    text = text.strip()
    moment = datetime.fromisoformat(text)
    if end_of_day and _is_a_date(text):
        moment += timedelta(days=1)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_a_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True

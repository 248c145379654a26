"""Times as the edges take them: one parser for the API, the dashboard and the CLI."""

from datetime import UTC, datetime


def parse_time_text(text: str) -> datetime:
    """An ISO 8601 time, aware: without a zone it is UTC; a date alone is its midnight.
    Raises ValueError (each edge words its own refusal)."""
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

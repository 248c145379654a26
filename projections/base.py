"""A projection applies batches of events to its tables inside the runner's transaction."""

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Table


class Projection(Protocol):
    name: str  # its tracking position's name
    schema_version: int  # bump to rebuild it from the log on the next start
    tables: Sequence[Table]
    topics: Sequence[str]  # the event topics it reads; the others only advance its position

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Apply (position, domain event) pairs, in order, within the open transaction."""
        ...

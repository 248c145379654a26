"""Reading one aggregate's stored events, typed as this package's events.

eventsourcing's store hands back `DomainEventProtocol`s; every event lowrouter stores is an
`Aggregate.Event` of its own aggregates (domain/), so the narrowing is a cast, not a check.
"""

from collections.abc import Iterator
from typing import cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate


def stored_events(
    app: Application[UUID],
    originator_id: UUID,
    *,
    gt: int | None = None,
    limit: int | None = None,
) -> Iterator[Aggregate.Event]:
    """One aggregate's events in version order (after version `gt`, at most `limit`)."""
    return cast(Iterator[Aggregate.Event], app.events.get(originator_id, gt=gt, limit=limit))

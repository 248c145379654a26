"""The reconciler's read: the open holds (the usage projection's lr_holds)."""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from sqlalchemy import Engine, select

from application.reconcile import OpenHold
from projections.queries.freshness import query
from projections.schema import from_us, holds, to_us


@query("usage")
def stale_holds(
    engine: Engine, reserved_before: datetime, limit: int = 10_000
) -> Sequence[OpenHold]:
    query = (
        select(holds)
        .where(holds.c.reserved_us < to_us(reserved_before))
        .order_by(holds.c.reserved_us)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        OpenHold(
            request_id=row.request_id,
            account_id=UUID(row.account_id),
            key_id=UUID(row.key_id),
            amount=row.amount,
            reserved_at=from_us(row.reserved_us),
            owner=row.owner,
        )
        for row in rows
    ]

"""Refused requests per key, UTC day and reason (LedgerPage.Refused: no money moved), for the
dashboard's overview. A pure function of the log, like every projection."""

from collections.abc import Sequence
from typing import Any

from eventsourcing.utils import get_topic
from sqlalchemy import BigInteger, Column, Connection, String, Table, insert, update

from application.clock import utc_day
from domain.ledger import LedgerPage
from projections.schema import metadata

daily_refusals = Table(
    "lr_daily_refusals",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("day", String(10), primary_key=True),
    Column("reason", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


class RefusalsProjection:
    name = "refusals"
    schema_version = 1
    tables = (daily_refusals,)
    topics = (get_topic(LedgerPage.Refused),)

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for _position, e in events:
            if isinstance(e, LedgerPage.Refused):
                day = utc_day(e.timestamp).isoformat()
                subject = (str(e.key_id), day, str(e.reason)[:64])
                counts[subject] = counts.get(subject, 0) + int(e.count)
        table = daily_refusals
        for (key_id, day, reason), count in counts.items():
            changed = conn.execute(
                update(table)
                .where(table.c.key_id == key_id, table.c.day == day, table.c.reason == reason)
                .values(count=table.c.count + count)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(table).values(key_id=key_id, day=day, reason=reason, count=count)
                )

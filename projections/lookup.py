"""Reading the active-key lookup: one indexed read per request, no cache."""

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson
from sqlalchemy import Engine, select

from domain.scope import Scope
from projections.schema import from_us, keys


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: UUID
    account_id: UUID
    kind: str  # "sk" | "mk"
    name: str
    display: str
    scope: Scope
    status: str
    grace_deadline: datetime | None

    def status_at(self, now: datetime) -> str:
        if self.status == "rotating" and self.grace_deadline is not None:
            return "rotating" if now < self.grace_deadline else "expired"
        return self.status


_KEY_COLUMNS = select(
    keys.c.key_id,
    keys.c.account_id,
    keys.c.kind,
    keys.c.name,
    keys.c.prefix,
    keys.c.last4,
    keys.c.models,
    keys.c.region,
    keys.c.daily_limit,
    keys.c.status,
    keys.c.grace_deadline_us,
)


def find_key(engine: Engine, token_hash: str) -> KeyRecord | None:
    with engine.connect() as conn:
        row = conn.execute(_KEY_COLUMNS.where(keys.c.token_hash == token_hash)).first()
    if row is None:
        return None
    models = orjson.loads(row.models) if row.models is not None else None
    return KeyRecord(
        key_id=UUID(row.key_id),
        account_id=UUID(row.account_id),
        kind=row.kind,
        name=row.name,
        display=f"{row.prefix}…{row.last4}",
        scope=Scope.from_fields(models, row.region, row.daily_limit),
        status=row.status,
        grace_deadline=from_us(row.grace_deadline_us),
    )

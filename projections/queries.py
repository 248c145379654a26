"""Read-side queries of the usage tables, for the management API, the CLI and the dashboard.

Usage rows are keyed by the log position of their `Settled` event. Paging newest first by
position, with "strictly before the last position seen" as the cursor, has no gaps or repeats even
while new rows arrive: the projection applies events in log order, so every row inserted after a
page was read has a higher position than anything on that page.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, select

from projections.schema import from_us, key_activity, usage

USAGE_COLUMNS = (
    usage.c.position,
    usage.c.request_id,
    usage.c.at_us,
    usage.c.key_id,
    usage.c.key_name,
    usage.c.model,
    usage.c.provider,
    usage.c.region,
    usage.c.prompt_tokens,
    usage.c.completion_tokens,
    usage.c.cost,
    usage.c.status,
    usage.c.status_code,
    usage.c.latency_ms,
    usage.c.streamed,
    usage.c.client_ip,
    usage.c.user_agent,
    usage.c.api,
    usage.c.cached_prompt_tokens,
    usage.c.cache_write_tokens,
    usage.c.reasoning_tokens,
    usage.c.cost_source,
    usage.c.upstream_cost,
    usage.c.flags,
    usage.c.unbilled,
)


def usage_page(
    engine: Engine,
    account_id: UUID,
    *,
    key_id: UUID | None = None,
    model: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    before_position: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """One page of an account's usage rows, newest first.

    `since_us` is inclusive and `until_us` exclusive (microseconds since the epoch);
    `before_position` is the previous page's last `position`. Each row is a dict of the
    `lr_usage` columns listed in USAGE_COLUMNS (times as `at_us`, money in micro-credits).
    """
    query = select(*USAGE_COLUMNS).where(usage.c.account_id == str(account_id))
    if key_id is not None:
        query = query.where(usage.c.key_id == str(key_id))
    if model is not None:
        query = query.where(usage.c.model == model)
    if since_us is not None:
        query = query.where(usage.c.at_us >= since_us)
    if until_us is not None:
        query = query.where(usage.c.at_us < until_us)
    if before_position is not None:
        query = query.where(usage.c.position < before_position)
    query = query.order_by(usage.c.position.desc()).limit(limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def last_used(engine: Engine, key_ids: Iterable[UUID | str]) -> dict[str, datetime]:
    """When each of these keys was last used (keys never used are absent), by key id string."""
    ids = [str(key_id) for key_id in key_ids]
    if not ids:
        return {}
    query = select(key_activity.c.key_id, key_activity.c.last_used_us).where(
        key_activity.c.key_id.in_(ids)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {row.key_id: moment for row in rows if (moment := from_us(row.last_used_us))}

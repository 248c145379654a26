"""The management API's and the CLI's reads: usage pages, keys' last use and meters, accounts,
webhook endpoints and deliveries (their SQL stays beside their projection, projections.webhooks).

Usage rows are keyed by the log position of their `Settled` event. Paging newest first by
position, with "strictly before the last position seen" as the cursor, has no gaps or repeats even
while new rows arrive: the projection applies events in log order, so every row inserted after a
page was read has a higher position than anything on that page.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, select

from domain.ledger import meter_of
from domain.tokens import TokenKind
from projections.lookup import keys_by_id
from projections.queries.freshness import query
from projections.schema import accounts, from_us, key_activity, usage
from projections.webhooks import (
    DeliveryRow,
    EndpointView,
    deliveries_of_endpoint,
    endpoints_of_account,
)

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


@query("usage")
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


@query("usage")
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


@query("keys")
def meters(engine: Engine, key_ids: Iterable[UUID | str]) -> dict[str, str]:
    """What each key's limits are metered under (its rotation lineage), by key id string: the
    ledger keeps a lineage's figures under it (`PageView.limits_of`). A key the projection does
    not hold yet is its own meter."""
    ids = [str(key_id) for key_id in key_ids]
    lineages = {key_id: record.lineage_id for key_id, record in keys_by_id(engine, ids).items()}
    return {key_id: meter_of(key_id, lineages.get(key_id)) for key_id in ids}


@query("keys")
def management_key_account(engine: Engine, key_id: UUID) -> UUID | None:
    """The account a management key belongs to (None: no such management key)."""
    record = keys_by_id(engine, [key_id]).get(str(key_id))
    if record is None or record.kind is not TokenKind.MANAGEMENT:
        return None
    return record.account_id


# Accounts (the keys projection's lr_accounts) ----------------------------------------------------


@dataclass(frozen=True)
class AccountRow:
    account_id: UUID
    name: str
    opened: datetime


@query("keys")
def all_accounts(engine: Engine) -> list[AccountRow]:
    """Every account, oldest first."""
    rows = select(accounts.c.account_id, accounts.c.name, accounts.c.opened_us).order_by(
        accounts.c.opened_us, accounts.c.name
    )
    with engine.connect() as conn:
        return [AccountRow(UUID(a), name, from_us(at)) for a, name, at in conn.execute(rows)]


@query("keys")
def names_of_accounts(engine: Engine) -> dict[str, str]:
    """Every account's name, by account id string."""
    with engine.connect() as conn:
        return {a: name for a, name in conn.execute(select(accounts.c.account_id, accounts.c.name))}


# Webhooks (the webhooks projection's outbox; its flags come from forensics) ----------------------


@query("webhooks")
def webhooks_of_account(engine: Engine, account_id: UUID) -> list[EndpointView]:
    """The account's endpoints that were not removed, oldest first."""
    return endpoints_of_account(engine, account_id)


@query("forensics", "webhooks")
def deliveries_of_webhook(engine: Engine, endpoint_id: UUID) -> list[DeliveryRow]:
    """The endpoint's messages, newest first (a flag's message once forensics raised it)."""
    return deliveries_of_endpoint(engine, endpoint_id)

"""The usage history: one row per completion (with the key's name at the time), per-key and
per-day totals, each key's first and last use, and the open holds the reconciler settles."""

from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.utils import get_topic
from sqlalchemy import Connection, delete, insert, select, update

from domain.ledger import LedgerPage
from projections.base import insert_rows
from projections.schema import daily_spend, holds, key_activity, ledger_pages, to_us, usage


class UsageProjection:
    name = "usage"
    # 2: api, cached/cache-write/reasoning tokens, cost source; 3: 64-bit;
    # 4: unbilled (what an over_hold usage cost beyond its hold); 5: holds' owners
    schema_version = 5
    tables = (usage, daily_spend, key_activity, holds, ledger_pages)
    topics = tuple(
        get_topic(cls)
        for cls in (
            LedgerPage.Opened,
            LedgerPage.Reserved,
            LedgerPage.Settled,
            LedgerPage.Released,
        )
    )

    def __init__(self) -> None:
        self._page_accounts: dict[str, str] = {}  # page id -> account id; never changes

    def apply(self, conn: Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Batch-oriented: rows are inserted many at once, totals summed in memory first."""
        usage_rows: list[dict[str, Any]] = []
        new_holds: dict[str, dict[str, Any]] = {}
        closed_holds: list[str] = []
        spend: dict[tuple[str, str], list[Any]] = {}  # (key, day) -> [account, cost, requests]
        activity: dict[str, list[int]] = {}  # key -> [first_us, last_us, requests, cost]
        for position, event in events:
            if isinstance(event, LedgerPage.Opened):
                page = str(event.originator_id)
                self._page_accounts[page] = str(event.account_id)
                conn.execute(
                    insert(ledger_pages).values(
                        page_id=page, account_id=str(event.account_id), day=event.day
                    )
                )
            elif isinstance(event, LedgerPage.Reserved):
                new_holds[event.request_id] = {
                    "request_id": event.request_id,
                    "account_id": self._account_of(conn, event),
                    "key_id": event.key_id,
                    "amount": event.amount,
                    "reserved_us": to_us(event.timestamp),
                    "owner": getattr(event, "owner", None),
                }
            elif isinstance(event, LedgerPage.Released):
                if new_holds.pop(event.request_id, None) is None:
                    closed_holds.append(event.request_id)
            elif isinstance(event, LedgerPage.Settled):
                if new_holds.pop(event.request_id, None) is None:
                    closed_holds.append(event.request_id)
                account_id = self._account_of(conn, event)
                at_us = to_us(event.timestamp)
                usage_rows.append(_usage_row(position, account_id, at_us, event))
                total = spend.setdefault((event.key_id, event.reserved_day), [account_id, 0, 0])
                total[1] += event.cost
                total[2] += 1
                seen = activity.setdefault(event.key_id, [at_us, at_us, 0, 0])
                seen[1] = at_us
                seen[2] += 1
                seen[3] += event.cost
        if usage_rows:
            insert_rows(conn, usage, usage_rows)
        if new_holds:
            insert_rows(conn, holds, list(new_holds.values()))
        if closed_holds:
            conn.execute(delete(holds).where(holds.c.request_id.in_(closed_holds)))
        _add_spend(conn, spend)
        _add_activity(conn, activity)

    def _account_of(self, conn: Connection, event: Any) -> str:
        page = str(event.originator_id)
        account = self._page_accounts.get(page)
        if account is None:
            account = conn.execute(
                select(ledger_pages.c.account_id).where(ledger_pages.c.page_id == page)
            ).scalar_one()
            self._page_accounts[page] = account
        return account


def _usage_row(position: int, account_id: str, at_us: int, e: Any) -> dict[str, Any]:
    return {
        "position": position,
        "request_id": e.request_id,
        "at_us": at_us,
        "day": e.reserved_day,
        "account_id": account_id,
        "key_id": e.key_id,
        "key_name": e.key_name,
        "model": e.model,
        "provider": e.provider,
        "region": e.region,
        "prompt_tokens": e.prompt_tokens,
        "completion_tokens": e.completion_tokens,
        "held": e.held,
        "cost": e.cost,
        "status": e.status,
        "status_code": e.status_code,
        "latency_ms": e.latency_ms,
        "streamed": e.streamed,
        "client_ip": e.client_ip,
        "user_agent": e.user_agent,
        "flags": orjson.dumps(e.flags).decode(),
        "api": e.api,
        "cached_prompt_tokens": e.cached_prompt_tokens,
        "cache_write_tokens": e.cache_write_tokens,
        "reasoning_tokens": e.reasoning_tokens,
        "cost_source": e.cost_source,
        "upstream_cost": e.upstream_cost,
        "unbilled": e.unbilled,
    }


def _add_spend(conn: Connection, spend: dict[tuple[str, str], list[Any]]) -> None:
    for (key_id, day), (account_id, cost, requests) in spend.items():
        changed = conn.execute(
            update(daily_spend)
            .where(daily_spend.c.key_id == key_id, daily_spend.c.day == day)
            .values(cost=daily_spend.c.cost + cost, requests=daily_spend.c.requests + requests)
        ).rowcount
        if not changed:
            conn.execute(
                insert(daily_spend).values(
                    key_id=key_id, day=day, account_id=account_id, cost=cost, requests=requests
                )
            )


def _add_activity(conn: Connection, activity: dict[str, list[int]]) -> None:
    for key_id, (first_us, last_us, requests, cost) in activity.items():
        exists = conn.execute(
            select(key_activity.c.key_id).where(key_activity.c.key_id == key_id)
        ).first()
        if exists:
            conn.execute(
                update(key_activity)
                .where(key_activity.c.key_id == key_id)
                .values(
                    last_used_us=last_us,
                    requests=key_activity.c.requests + requests,
                    cost=key_activity.c.cost + cost,
                )
            )
        else:
            conn.execute(
                insert(key_activity).values(
                    key_id=key_id,
                    first_used_us=first_us,
                    last_used_us=last_us,
                    requests=requests,
                    cost=cost,
                )
            )

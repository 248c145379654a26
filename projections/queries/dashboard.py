"""The dashboard's read side: what the overview and the usage page ask of the read models.

Every figure comes from the usage history (`lr_usage`, `lr_daily_spend`) and the refusal counts
(`lr_daily_refusals`); each query names the projections it reads (projections.queries.freshness).
Money is in micro-credits; days are UTC days ("2026-03-02"), the day a request was charged to.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import Engine, Select, case, func, select

from projections.queries.freshness import query
from projections.refusals import daily_refusals
from projections.schema import daily_spend, usage

ALERTING_USAGE_FLAGS = ("over_hold",)  # usage-row flags that are an alert on the overview


@dataclass
class SpendHistory:
    """An account's spend and traffic per day over a span of days."""

    by_key_day: dict[tuple[str, str], int] = field(default_factory=dict)  # (key, day) -> cost
    by_model_day: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, day) -> cost
    requests_by_day: dict[str, int] = field(default_factory=dict)
    errors_by_day: dict[str, int] = field(default_factory=dict)  # completions not "ok"
    refusals: dict[tuple[str, str], int] = field(default_factory=dict)  # (day, reason) -> count
    flagged: dict[str, int] = field(default_factory=dict)  # alerting usage flag -> rows

    def spend_on(self, days: Iterable[str]) -> int:
        wanted = set(days)
        return sum(cost for (_key, day), cost in self.by_key_day.items() if day in wanted)

    def by_key(self, days: Iterable[str]) -> dict[str, int]:
        wanted, totals = set(days), dict[str, int]()
        for (key, day), cost in self.by_key_day.items():
            if day in wanted:
                totals[key] = totals.get(key, 0) + cost
        return totals

    def by_model(self, days: Iterable[str]) -> dict[str, int]:
        wanted, totals = set(days), dict[str, int]()
        for (model, day), cost in self.by_model_day.items():
            if day in wanted:
                totals[model] = totals.get(model, 0) + cost
        return totals


@query("usage", "refusals")
def spend_history(
    engine: Engine, account_id: UUID, key_ids: Sequence[UUID | str], first_day: str
) -> SpendHistory:
    """Spend per key and per model, requests, errors and refusals per day, from `first_day`
    on. `key_ids` are the account's keys (refusals are recorded per key)."""
    account = str(account_id)
    history = SpendHistory()
    by_key = select(daily_spend.c.key_id, daily_spend.c.day, daily_spend.c.cost).where(
        daily_spend.c.account_id == account, daily_spend.c.day >= first_day
    )
    not_ok = func.sum(case((usage.c.status != "ok", 1), else_=0))
    by_model = (
        select(
            usage.c.model,
            usage.c.day,
            func.sum(usage.c.cost).label("cost"),
            func.count().label("requests"),
            not_ok.label("errors"),
        )
        .where(usage.c.account_id == account, usage.c.day >= first_day)
        .group_by(usage.c.model, usage.c.day)
    )
    flagged = select(usage.c.flags, func.count().label("rows")).where(
        usage.c.account_id == account, usage.c.day >= first_day, usage.c.flags != "[]"
    )
    refused = (
        select(daily_refusals.c.day, daily_refusals.c.reason, func.sum(daily_refusals.c.count))
        .where(
            daily_refusals.c.key_id.in_([str(k) for k in key_ids]),
            daily_refusals.c.day >= first_day,
        )
        .group_by(daily_refusals.c.day, daily_refusals.c.reason)
    )
    with engine.connect() as conn:
        for key_id, day, cost in conn.execute(by_key):
            history.by_key_day[(key_id, day)] = int(cost)
        for row in conn.execute(by_model):
            history.by_model_day[(row.model, row.day)] = int(row.cost)
            requests, errors = history.requests_by_day, history.errors_by_day
            requests[row.day] = requests.get(row.day, 0) + int(row.requests)
            errors[row.day] = errors.get(row.day, 0) + int(row.errors)
        for flags, rows in conn.execute(flagged.group_by(usage.c.flags)):
            for flag in orjson.loads(flags):
                if flag in ALERTING_USAGE_FLAGS:
                    history.flagged[flag] = history.flagged.get(flag, 0) + int(rows)
        for day, reason, count in conn.execute(refused):
            history.refusals[(day, reason)] = int(count)
    return history


# The usage page: filters, totals, pages -----------------------------------------------------------


@dataclass(frozen=True)
class UsageFilter:
    """Which usage rows: every field None means "any". `since_us` inclusive, `until_us`
    exclusive (microseconds since the epoch)."""

    account_id: UUID
    key_id: UUID | None = None
    model: str | None = None
    status: str | None = None
    api: str | None = None
    since_us: int | None = None
    until_us: int | None = None

    def where(self, query: Select[Any]) -> Select[Any]:
        query = query.where(usage.c.account_id == str(self.account_id))
        if self.key_id is not None:
            query = query.where(usage.c.key_id == str(self.key_id))
        if self.model is not None:
            query = query.where(usage.c.model == self.model)
        if self.status is not None:
            query = query.where(usage.c.status == self.status)
        if self.api is not None and "api" in usage.c:
            query = query.where(usage.c["api"] == self.api)
        if self.since_us is not None:
            query = query.where(usage.c.at_us >= self.since_us)
        if self.until_us is not None:
            query = query.where(usage.c.at_us < self.until_us)
        return query


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    cost: int
    prompt_tokens: int
    completion_tokens: int


@query("usage")
def usage_totals(engine: Engine, chosen: UsageFilter) -> UsageTotals:
    query = chosen.where(
        select(
            func.count(),
            func.coalesce(func.sum(usage.c.cost), 0),
            func.coalesce(func.sum(usage.c.prompt_tokens), 0),
            func.coalesce(func.sum(usage.c.completion_tokens), 0),
        )
    )
    with engine.connect() as conn:
        requests, cost, prompt, completion = conn.execute(query).one()
    return UsageTotals(int(requests), int(cost), int(prompt), int(completion))


@query("usage")
def usage_rows(
    engine: Engine,
    chosen: UsageFilter,
    *,
    before_position: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The filtered rows, newest first, each a dict of every `lr_usage` column."""
    query = chosen.where(select(usage))
    if before_position is not None:
        query = query.where(usage.c.position < before_position)
    query = query.order_by(usage.c.position.desc())
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


@query("usage")
def rows_newer_than(engine: Engine, chosen: UsageFilter, position: int) -> int:
    """How many filtered rows are newer than `position`: where a page starts in the whole."""
    query = chosen.where(select(func.count())).where(usage.c.position >= position)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@query("usage")
def usage_choices(engine: Engine, account_id: UUID) -> dict[str, list[str]]:
    """The models, statuses (and APIs, once rows carry one) this account's usage has."""
    account = str(account_id)
    columns = {"model": usage.c.model, "status": usage.c.status}
    if "api" in usage.c:
        columns["api"] = usage.c["api"]
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for name, column in columns.items():
            query = select(column).where(usage.c.account_id == account).distinct()
            found[name] = sorted(str(v) for (v,) in conn.execute(query) if v is not None)
    return found

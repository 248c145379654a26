"""The usage page: the chart of daily spend per key, and the usage history with filters (key,
model, API, status, time range), the filtered range's totals, pages that say where you are, and
a CSV of exactly the filtered rows."""

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from domain.money import format_credits
from infrastructure.escaping import csv_cell
from infrastructure.http.dashboard.chart import daily_chart
from infrastructure.http.dashboard.constants import BASE, CHART_DAYS, USAGE_PAGE_SIZE
from infrastructure.http.dashboard.forms import catalogue_models
from infrastructure.http.dashboard.money import money, plural
from infrastructure.http.dashboard.rendering import call, render
from infrastructure.http.dashboard.rows import iso, usage_row
from infrastructure.http.dashboard.sessions import signed_in
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.http.limits import whole_number
from infrastructure.times import parse_time_text
from projections.queries.dashboard import (
    UsageFilter,
    rows_newer_than,
    spend_history,
    usage_choices,
    usage_rows,
    usage_totals,
)
from projections.queries.freshness import ReadSide
from projections.schema import from_us, to_us

FILTERS = ("key", "model", "api", "status", "since", "until")
# The CSV's columns: the management API's USAGE names (and `api` etc. once rows carry them).
CSV_COLUMNS = (
    "request_id",
    "at",
    "key_id",
    "key_name",
    "api",
    "model",
    "provider",
    "region",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "status",
    "latency_ms",
    "streamed",
    "client_ip",
    "user_agent",
)


def parse_moment(text: str, end_of_day: bool = False) -> datetime | None:
    """A day (2026-01-31) or an ISO time (infrastructure.times); blank is None. A day as the
    end of a range means the end of that day."""
    if not text.strip():
        return None
    try:
        return parse_time_text(text, end_of_day=end_of_day)
    except ValueError:
        raise ValueError("must be a day (2026-01-31) or an ISO time") from None


@dataclass
class ChosenUsage:
    """The filters as given (to fill the form and the links) and as a query."""

    query: UsageFilter
    given: dict[str, str]
    errors: list[str] = field(default_factory=list)

    @property
    def kept(self) -> dict[str, str]:
        return {k: v for k, v in self.given.items() if v}


def read_filters(
    params: QueryParams, account_id: UUID, names: Mapping[str, tuple[str, str]]
) -> ChosenUsage:
    """The filters of a usage request. An unusable one is dropped with a message."""
    given = {name: params.get(name, "").strip()[:128] for name in FILTERS}
    errors: list[str] = []
    key_id: UUID | None = None
    if given["key"]:
        if given["key"] in names:
            key_id = UUID(given["key"])
        else:
            errors.append("No such key in this account; showing every key.")
            given["key"] = ""
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            moments[name] = parse_moment(given[name], end_of_day=name == "until")
        except ValueError as error:
            errors.append(f"'{name}' {error}; ignored.")
            given[name], moments[name] = "", None
    since, until = moments["since"], moments["until"]
    query = UsageFilter(
        account_id=account_id,
        key_id=key_id,
        model=given["model"] or None,
        status=given["status"] or None,
        api=given["api"] or None,
        since_us=to_us(since) if since else None,
        until_us=to_us(until) if until else None,
    )
    return ChosenUsage(query, given, errors)


def page_position(params: QueryParams) -> int | None:
    text = params.get("before", "")
    return whole_number(text)


async def usage_page_view(request: Request, dashboard: Dashboard) -> Response:
    """The chart of daily spend per key (30 days) and the usage history, newest first."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    api_keys = await call(runtime.app.list_keys, session.account_id)
    names = {str(k.id): (k.name, k.display) for k in api_keys}
    chosen = read_filters(request.query_params, session.account_id, names)
    before = page_position(request.query_params)
    reads = dashboard.reads
    rows = await run_in_threadpool(
        reads.ask_after_settlements,
        session.account_id,
        usage_rows,
        chosen.query,
        before_position=before,
        limit=USAGE_PAGE_SIZE + 1,
    )
    totals = await run_in_threadpool(reads.ask, usage_totals, chosen.query)
    more = len(rows) > USAGE_PAGE_SIZE
    rows = rows[:USAGE_PAGE_SIZE]
    kept = chosen.kept
    first_shown = (
        await run_in_threadpool(reads.ask, rows_newer_than, chosen.query, rows[0]["position"])
        if rows
        else 0
    )
    next_url = (
        f"{BASE}/usage?{urlencode({**kept, 'before': str(rows[-1]['position'])})}"
        if more and rows
        else None
    )
    first_url = f"{BASE}/usage?{urlencode(kept)}" if before is not None else None
    page_number = (first_shown - 1) // USAGE_PAGE_SIZE + 1 if rows else 1
    pages = max(1, -(-totals.requests // USAGE_PAGE_SIZE))
    where = (
        f"Completions {first_shown}–{first_shown + len(rows) - 1} of {totals.requests}, "
        f"newest first (page {page_number} of {pages})."
        if rows
        else ""
    )

    today = dashboard.now().astimezone(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(CHART_DAYS - 1, -1, -1)]
    history = await run_in_threadpool(
        reads.ask, spend_history, session.account_id, [k.id for k in api_keys], days[0]
    )
    choices = await run_in_threadpool(reads.ask, usage_choices, session.account_id)
    models = sorted({m for m, _ in catalogue_models(dashboard)} | set(choices["model"]))
    return render(
        request,
        "usage.html",
        title="Usage",
        nav="usage",
        chart=daily_chart(history.by_key_day, names, days),
        rows=[usage_row(row, names) for row in rows],
        keys=sorted(
            ((key_id, name, display) for key_id, (name, display) in names.items()),
            key=lambda item: item[1].casefold(),
        ),
        models=models,
        statuses=choices["status"],
        apis=choices.get("api", []),
        filters=chosen.given,
        filtered=bool(kept),
        errors=chosen.errors,
        totals={
            "completions": plural(totals.requests, "completion"),
            "cost": money(totals.cost),
            "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens,
        },
        where=where,
        csv_url=f"{BASE}/usage.csv" + (f"?{urlencode(kept)}" if kept else ""),
        next_url=next_url,
        first_url=first_url,
        page_size=USAGE_PAGE_SIZE,
    )


CSV_PAGE = 1000
cell = csv_cell  # the name this module's callers know


def csv_line(row: Mapping[str, Any]) -> list[str]:
    """One usage row as the CSV writes it: money as decimal strings, times in ISO UTC."""
    values = {
        **row,
        "at": iso(from_us(row["at_us"])),
        "cost": format_credits(int(row["cost"])),
        "unbilled": format_credits(int(row.get("unbilled") or 0)),
        "streamed": "true" if row["streamed"] else "false",
    }
    return [cell(values.get(c)) for c in csv_columns(row)]


def csv_columns(row: Mapping[str, Any] | None) -> tuple[str, ...]:
    extra = ("cached_prompt_tokens", "reasoning_tokens", "cost_source", "upstream_cost", "unbilled")
    present = tuple(c for c in extra if row is not None and c in row)
    return tuple(c for c in CSV_COLUMNS if c != "api" or row is None or "api" in row) + present


def csv_text(reads: ReadSide, chosen: UsageFilter) -> Iterator[str]:
    """Every filtered row, newest first, read a page at a time (so memory stays small); rows
    that arrive during the download are newer than the first page and are not included."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    rows = reads.ask_after_settlements(chosen.account_id, usage_rows, chosen, limit=CSV_PAGE)
    writer.writerow(csv_columns(rows[0] if rows else None))
    while rows:
        for row in rows:
            writer.writerow(csv_line(row))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < CSV_PAGE:
            break
        rows = reads.ask(usage_rows, chosen, before_position=rows[-1]["position"], limit=CSV_PAGE)
    yield buffer.getvalue()


async def usage_csv(request: Request, dashboard: Dashboard) -> Response:
    """Exactly the rows the same filters show on the page (every page of them), newest first."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    api_keys = await call(runtime.app.list_keys, session.account_id)
    names = {str(k.id): (k.name, k.display) for k in api_keys}
    chosen = read_filters(request.query_params, session.account_id, names)
    stamp = dashboard.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(
        csv_text(dashboard.reads, chosen.query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="lowrouter-usage-{stamp}.csv"'},
    )

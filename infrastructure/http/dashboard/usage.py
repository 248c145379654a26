"""The usage page: the chart of daily spend per key and the usage history, with filters and
paging."""

from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode
from uuid import UUID

from sqlalchemy import (
    Engine,
    select,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.http.dashboard.chart import daily_chart
from infrastructure.http.dashboard.constants import BASE, CHART_DAYS, USAGE_PAGE_SIZE
from infrastructure.http.dashboard.forms import catalogue_models
from infrastructure.http.dashboard.key_pages import catch_up_usage
from infrastructure.http.dashboard.rendering import call, render
from infrastructure.http.dashboard.rows import usage_row
from infrastructure.http.dashboard.sessions import signed_in
from infrastructure.http.dashboard.state import Dashboard
from projections.queries import usage_page
from projections.schema import daily_spend, to_us


def spend_by_day(engine: Engine, account_id: UUID, first_day: str) -> dict[tuple[str, str], int]:
    query = select(daily_spend.c.key_id, daily_spend.c.day, daily_spend.c.cost).where(
        daily_spend.c.account_id == str(account_id), daily_spend.c.day >= first_day
    )
    with engine.connect() as conn:
        return {(row.key_id, row.day): int(row.cost) for row in conn.execute(query)}


def parse_since(text: str) -> datetime | None:
    """A day (2026-01-31) or an ISO time; a time without a zone is UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = (
            datetime.combine(date.fromisoformat(text), datetime.min.time())
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise ValueError("'since' must be a day (2026-01-31) or an ISO time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def usage_page_view(request: Request, dashboard: Dashboard) -> Response:
    """The chart of daily spend per key (30 days) and the usage history, newest first."""
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    params = request.query_params
    api_keys = await call(runtime.ledger.list_keys, session.account_id)
    names = {str(k.id): (k.name, k.display) for k in api_keys}
    errors: list[str] = []

    key_filter = params.get("key", "")
    key_id: UUID | None = None
    if key_filter:
        if key_filter in names:
            key_id = UUID(key_filter)
        else:
            errors.append("No such key in this account; showing every key.")
            key_filter = ""
    model_filter = params.get("model", "").strip()[:128]
    since_text = params.get("since", "").strip()[:40]
    since: datetime | None = None
    try:
        since = parse_since(since_text)
    except ValueError as error:
        errors.append(f"{error}; showing every day.")
        since_text = ""
    before_text = params.get("before", "")
    before = int(before_text) if before_text.isdigit() else None

    await catch_up_usage(dashboard)
    rows = await run_in_threadpool(
        usage_page,
        runtime.engine,
        session.account_id,
        key_id=key_id,
        model=model_filter or None,
        since_us=to_us(since) if since else None,
        before_position=before,
        limit=USAGE_PAGE_SIZE + 1,
    )
    more = len(rows) > USAGE_PAGE_SIZE
    rows = rows[:USAGE_PAGE_SIZE]
    filters = {"key": key_filter, "model": model_filter, "since": since_text}
    kept = {k: v for k, v in filters.items() if v}
    next_url = (
        f"{BASE}/usage?{urlencode({**kept, 'before': str(rows[-1]['position'])})}"
        if more and rows
        else None
    )
    first_url = f"{BASE}/usage?{urlencode(kept)}" if before is not None else None

    today = dashboard.now().astimezone(UTC).date()
    days = [(today - timedelta(days=n)).isoformat() for n in range(CHART_DAYS - 1, -1, -1)]
    spend = await run_in_threadpool(spend_by_day, runtime.engine, session.account_id, days[0])
    chart = daily_chart(spend, names, days)

    return render(
        request,
        "usage.html",
        title="Usage",
        nav="usage",
        chart=chart,
        rows=[usage_row(row, names) for row in rows],
        keys=sorted(
            ((key_id, name, display) for key_id, (name, display) in names.items()),
            key=lambda item: item[1].casefold(),
        ),
        models=[model_id for model_id, _ in catalogue_models(dashboard)],
        filters=filters,
        errors=errors,
        next_url=next_url,
        first_url=first_url,
        page_size=USAGE_PAGE_SIZE,
    )

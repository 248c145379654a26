"""The overview, the landing page after sign-in: what was spent today and this month, on which
models and through which keys, how close each key is to its limits, and what needs a look."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.investigation import UsageFlag
from application.metering import REFUSALS
from application.spend import PageView
from domain.errors import (
    ConcurrencyLimitExceeded,
    DailyLimitExceeded,
    InsufficientCredits,
    MonthlyLimitExceeded,
    RateLimitExceeded,
)
from domain.keys import ApiKey
from domain.webhooks import EXPIRING_NOTICE_DAYS
from infrastructure.http.dashboard.chart import daily_chart
from infrastructure.http.dashboard.constants import BASE, CHART_DAYS, ROTATE_AFTER
from infrastructure.http.dashboard.money import credits, money, plural
from infrastructure.http.dashboard.rendering import call, render
from infrastructure.http.dashboard.rows import flag_text, when
from infrastructure.http.dashboard.sessions import signed_in
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.http.gateway import durable
from projections.queries.dashboard import SpendHistory, spend_history
from projections.queries.forensics import flags_for_keys
from projections.queries.management import meters

TOP_KEYS = 5  # the keys closest to a limit shown on the overview
EXPIRING_SOON = timedelta(days=EXPIRING_NOTICE_DAYS)  # as the key.expiring webhook

# What the traffic panel calls each reason the ledger records a refusal under.
REFUSAL_NAMES = {
    REFUSALS[InsufficientCredits]: "Not enough credits",
    REFUSALS[DailyLimitExceeded]: "Daily limit",
    REFUSALS[MonthlyLimitExceeded]: "Monthly limit",
    REFUSALS[RateLimitExceeded]: "Rate limit",
    REFUSALS[ConcurrencyLimitExceeded]: "Concurrency limit",
}


@dataclass(frozen=True)
class Period:
    """Spend in a period beside the period before it."""

    label: str
    amount: str
    before_label: str
    before: str
    change: str  # "+0.500000 credits (+25%)", "no change", …


@dataclass(frozen=True)
class Headroom:
    key_id: str
    name: str
    display: str
    limit_name: str  # "Daily limit"
    used: str  # spent (and held) so far
    limit: str
    percent: int  # 0–100, for the bar; the text says the figures
    text: str


@dataclass(frozen=True)
class Alert:
    kind: str  # a short badge: "Unexpected usage", "Leak", "Rotate", "Over hold"
    text: str
    link: str | None
    link_text: str | None


def change_text(now: int, before: int) -> str:
    if now == before:
        return "no change"
    sign = "+" if now > before else "−"
    delta = abs(now - before)
    percent = f" ({sign}{round(100 * delta / before)}%)" if before else ""
    return f"{sign}{credits(delta)}{percent}"


def month_days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def periods(history: SpendHistory, today: date) -> list[Period]:
    yesterday = today - timedelta(days=1)
    month_start = today.replace(day=1)
    last_month_start = (month_start - timedelta(days=1)).replace(day=1)
    # the same days of last month (to the same day of the month, or its end)
    last_month_end = min(
        last_month_start.replace(day=1) + timedelta(days=today.day - 1),
        month_start - timedelta(days=1),
    )
    spent_today = history.spend_on([today.isoformat()])
    spent_yesterday = history.spend_on([yesterday.isoformat()])
    spent_month = history.spend_on(month_days(month_start, today))
    spent_before = history.spend_on(month_days(last_month_start, last_month_end))
    return [
        Period(
            "Spent today",
            money(spent_today),
            "yesterday",
            money(spent_yesterday),
            change_text(spent_today, spent_yesterday),
        ),
        Period(
            "Spent this month",
            money(spent_month),
            f"{last_month_start:%B} 1–{last_month_end.day}",
            money(spent_before),
            change_text(spent_month, spent_before),
        ),
    ]


def headroom(keys: list[ApiKey], view: PageView, metered: dict[str, str]) -> list[Headroom]:
    """Each limit of each key (daily, monthly, requests and tokens a minute), the closest to its
    limit first: the ledger's figures of the key's rotation lineage (`metered`: key id ->
    meter), shared by a rotated key's successor; today's and the month's count holds of
    requests in flight, as the limits do."""
    found: list[Headroom] = []
    for key in keys:
        key_id = str(key.id)
        meter = metered.get(key_id, key_id)
        figures = view.limits_of(meter)
        requests, tokens = view.minute.get(meter, (0, 0))
        # (limit, its limit, used, its unit — None for credits — and the period's words)
        minute, policy = "in the last minute", key.policy
        bars: list[tuple[str, int | None, int, str | None, str]] = [
            ("Requests a minute", policy.requests_per_minute, requests, "request", minute),
            ("Tokens a minute", policy.tokens_per_minute, tokens, "token", minute),
            ("Daily limit", key.scope.daily_limit, figures.committed_today, None, "today"),
            ("Monthly limit", policy.monthly_limit, figures.committed_month, None, "this month"),
        ]
        for limit_name, limit, used, unit, period in bars:
            if limit is None:
                continue
            percent = min(100, round(100 * used / limit)) if limit else 100
            shown = str if unit else money
            of = plural(limit, unit) if unit else credits(limit)
            found.append(
                Headroom(
                    key_id=key_id,
                    name=key.name,
                    display=key.display,
                    limit_name=limit_name,
                    used=shown(used),
                    limit=shown(limit),
                    percent=percent,
                    text=f"{shown(used)} of {of} {period} ({percent}%)",
                )
            )
    return sorted(found, key=lambda h: (-h.percent, h.name, h.limit_name))[:TOP_KEYS]


async def overview_page(request: Request, dashboard: Dashboard) -> Response:
    session = await signed_in(request, dashboard)
    runtime = dashboard.gateway.runtime
    now = dashboard.now()
    today = now.astimezone(UTC).date()
    api_keys = await call(runtime.app.list_keys, session.account_id)
    view = await durable(runtime.spend.view(session.account_id))
    days = [(today - timedelta(days=n)).isoformat() for n in range(CHART_DAYS - 1, -1, -1)]
    last_month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    first_day = min(days[0], last_month.isoformat())
    key_ids = [key.id for key in api_keys]
    reads = dashboard.reads
    history = await run_in_threadpool(
        reads.ask, spend_history, session.account_id, key_ids, first_day
    )
    flags = await run_in_threadpool(reads.ask, flags_for_keys, key_ids)
    metered = await run_in_threadpool(reads.ask, meters, key_ids)
    live = [key for key in api_keys if key.status_at(now) != "revoked"]
    names = {str(k.id): (k.name, k.display) for k in api_keys}
    models = {model: (model, "") for model, _day in history.by_model_day}
    month = month_days(today.replace(day=1), today)
    return render(
        request,
        "overview.html",
        title="Overview",
        nav="overview",
        balance=money(view.balance),
        held=money(view.held),
        available=money(max(0, view.balance - view.held)),
        periods=periods(history, today),
        by_model=daily_chart(history.by_model_day, models, days, per="model"),
        by_key=daily_chart(history.by_key_day, names, days, per="key"),
        month_by_model=ranked(history.by_model(month), models),
        month_by_key=ranked(history.by_key(month), names),
        traffic=traffic_rows(history, days),
        traffic_totals={
            "completions": plural(
                sum(history.requests_by_day.get(d, 0) for d in days), "completion"
            ),
            "errors": sum(history.errors_by_day.get(d, 0) for d in days),
            "refused": sum(n for (d, _), n in history.refusals.items() if d >= days[0]),
        },
        refusal_reasons=refusal_reasons(history),
        headroom=headroom(live, view, metered),
        alerts=alerts(api_keys, flags, history, now),
        today=today.isoformat(),
        month=f"{today:%B %Y}",
    )


def ranked(totals: dict[str, int], names: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(name, display, amount), largest first."""
    order = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(*names.get(k, (k, "")), money(v)) for k, v in order if v]


def refusal_reasons(history: SpendHistory) -> list[tuple[str, str]]:
    reasons = sorted({reason for _day, reason in history.refusals})
    return [(r, REFUSAL_NAMES.get(r, r.replace("_", " ").capitalize())) for r in reasons]


def traffic_rows(history: SpendHistory, days: list[str]) -> list[tuple[str, int, int, list[int]]]:
    """(day, requests, upstream errors, refusals per reason), newest first, busy days only."""
    reasons = [reason for reason, _ in refusal_reasons(history)]
    rows = []
    for day in reversed(days):
        refused = [history.refusals.get((day, r), 0) for r in reasons]
        requests, errors = history.requests_by_day.get(day, 0), history.errors_by_day.get(day, 0)
        if requests or errors or any(refused):
            rows.append((day, requests, errors, refused))
    return rows


def alerts(
    keys: list[ApiKey],
    flags: dict[str, list[UsageFlag]],
    history: SpendHistory,
    now: datetime,
) -> list[Alert]:
    found: list[Alert] = []
    for key in keys:
        status = key.status_at(now)
        for flag in flags.get(str(key.id), []):
            if flag.acknowledged or status == "revoked":
                continue
            found.append(
                Alert(
                    "Unexpected usage",
                    f"{key.name} ({key.display}): {flag_text(flag.kind, flag.subject)}, "
                    f"{when(flag.at)}.",
                    f"{BASE}/keys#key-{key.id}",
                    f"Review {key.name}",
                )
            )
        if (
            key.revoke_reason == "leak"
            and key.revoked_at
            and now - key.revoked_at < timedelta(days=CHART_DAYS)
        ):
            found.append(
                Alert(
                    "Leak",
                    f"{key.name} ({key.display}) was reported leaked and revoked "
                    f"{when(key.revoked_at)}.",
                    f"{BASE}/keys/{key.id}/history",
                    f"History of {key.name}",
                )
            )
        expires_at = key.policy.expires_at
        rotate = f"{BASE}/keys/{key.id}/rotate" if key.access_at(now).rotatable else None
        if status == "revoked" or key.successor_id is not None:  # its successor carries it
            continue
        if expires_at is None and now - key.created_on > ROTATE_AFTER:
            found.append(
                Alert(
                    "Rotate",
                    f"{key.name} ({key.display}) is {(now - key.created_on).days} days old with no "
                    f"expiry: rotate keys at least every {ROTATE_AFTER.days} days.",
                    rotate,
                    f"Rotate {key.name}",
                )
            )
        elif expires_at is not None and now < expires_at <= now + EXPIRING_SOON:
            found.append(
                Alert(
                    "Expiring",
                    f"{key.name} ({key.display}) expires {when(expires_at)}: rotate it and "
                    "deploy the new token before then.",
                    rotate,
                    f"Rotate {key.name}",
                )
            )
    for usage_flag, rows in sorted(history.flagged.items()):
        found.append(
            Alert(
                usage_flag.replace("_", " ").capitalize(),
                f"{plural(rows, 'completion')} in the last {CHART_DAYS} days cost more than "
                "their hold (the difference was not charged).",
                f"{BASE}/usage",
                "See the usage",
            )
        )
    return found

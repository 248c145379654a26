"""How things look: keys, history events and usage records formatted for people."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.keys import ApiKey
from domain.money import format_credits
from infrastructure.http.dashboard.constants import BASE, ROTATE_AFTER
from projections.schema import from_us

# --- how things look -----------------------------------------------------------------------------


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def credits_text(micro: int) -> str:
    """Credits for people: "0.000123", "5", "12.5" (no trailing zeros)."""
    text = format_credits(micro)
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def models_text(models: Sequence[str] | None) -> str:
    return "every model" if models is None else ", ".join(models)


def region_text(region: str | None) -> str:
    return region or "any region"


def limit_text(limit: int | None) -> str:
    return "no limit" if limit is None else f"{credits_text(limit)} credits a day"


def age_text(age: timedelta) -> str:
    days = age.days
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}"
    hours = int(age.total_seconds() // 3600)
    return f"{hours} hour{'s' if hours != 1 else ''}" if hours else "less than an hour"


@dataclass(frozen=True)
class KeyRow:
    id: str
    name: str
    display: str
    status: str
    models: str
    region: str
    daily_limit: str
    spent_today: str
    created: str
    created_iso: str
    last_used: str
    age: str
    rotate_warning: bool
    grace_until: str | None
    changeable: bool
    rotated: bool
    flags: tuple[str, ...] = ()  # unexpected usage, described for people


def key_row(
    key: ApiKey,
    now: datetime,
    spent_today: int = 0,
    last_used_at: datetime | None = None,
    flags: Sequence[str] = (),
) -> KeyRow:
    status = key.status_at(now)
    age = now - key.created_on
    return KeyRow(
        id=str(key.id),
        name=key.name,
        display=key.display,
        status=status,
        models=models_text(key.scope.models),
        region=region_text(key.scope.region),
        daily_limit=limit_text(key.scope.daily_limit),
        spent_today=credits_text(spent_today),
        created=when(key.created_on),
        created_iso=iso(key.created_on),
        last_used=when(last_used_at),
        age=age_text(age),
        rotate_warning=status != "revoked" and age > ROTATE_AFTER,
        grace_until=when(key.grace_deadline) if status == "rotating" else None,
        changeable=status != "revoked" and key.successor_id is None,
        rotated=key.successor_id is not None,
        flags=tuple(flags),
    )


# --- key history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRow:
    version: int
    at: str
    at_iso: str
    what: str
    who: str
    address: str
    details: list[tuple[str, str, str | None]]  # (label, text, link)


EVENT_NAMES = {
    "Created": "Created",
    "Scoped": "Scope changed",
    "Renamed": "Renamed",
    "Rotated": "Rotated",
    "Revoked": "Revoked",
}


def history_row(event: Any) -> HistoryRow:
    """One event for people. Fields are chosen by name (never the token's hash)."""
    kind = type(event).__qualname__.rsplit(".", 1)[-1]
    actor = getattr(event, "actor", None) or {}
    details: list[tuple[str, str, str | None]] = []
    if kind in ("Created", "Renamed"):
        details.append(("Name", str(event.name), None))
    if kind in ("Created", "Scoped"):
        details += [
            ("Models", models_text(event.models), None),
            ("Region", region_text(event.region), None),
            ("Daily limit", limit_text(event.daily_limit), None),
        ]
    if kind == "Created" and event.predecessor_id is not None:
        details.append(
            (
                "Rotated from",
                str(event.predecessor_id),
                f"{BASE}/keys/{event.predecessor_id}/history",
            )
        )
    if kind == "Rotated":
        details += [
            ("Successor", str(event.successor_id), f"{BASE}/keys/{event.successor_id}/history"),
            ("Old token works until", when(event.grace_deadline), None),
        ]
    if kind == "Revoked":
        details.append(("Reason", str(event.reason), None))
    return HistoryRow(
        version=int(event.originator_version),
        at=when(event.timestamp),
        at_iso=iso(event.timestamp),
        what=EVENT_NAMES.get(kind, kind),
        who=f"{actor.get('name', '')} ({actor.get('kind', '')})" if actor else "lowrouter",
        address=str(actor.get("address") or ""),
        details=details,
    )


@dataclass(frozen=True)
class UsageRow:
    at: str
    at_iso: str
    key_id: str
    key_name: str
    key_display: str
    name_then: str | None
    model: str
    provider: str
    region: str
    prompt_tokens: int
    completion_tokens: int
    cost: str
    status: str
    latency_ms: int
    streamed: bool
    api: str = "chat.completions"
    cost_source: str = "reported"


def usage_row(row: Mapping[str, Any], names: Mapping[str, tuple[str, str]]) -> UsageRow:
    name, display = names.get(row["key_id"], (row["key_name"], ""))
    at = from_us(row["at_us"])
    return UsageRow(
        at=when(at),
        at_iso=iso(at),
        key_id=row["key_id"],
        key_name=name,
        key_display=display,
        name_then=row["key_name"] if row["key_name"] != name else None,
        model=row["model"],
        provider=row["provider"] or "",
        region=row["region"] or "",
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        cost=credits_text(int(row["cost"])),
        status=row["status"],
        latency_ms=int(row["latency_ms"]),
        streamed=bool(row["streamed"]),
        api=row.get("api") or "chat.completions",
        cost_source=row.get("cost_source") or "reported",
    )

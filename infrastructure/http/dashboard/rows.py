"""How things look: keys, history events and usage records formatted for people."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from application.investigation import UsageFlag
from domain.keys import ApiKey
from domain.policy import KeyPolicy, rotation_due
from infrastructure.http.dashboard.constants import BASE
from infrastructure.http.dashboard.money import money, per_day, per_month, plural
from projections.schema import from_us

# --- how things look -----------------------------------------------------------------------------


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def models_text(models: Sequence[str] | None) -> str:
    return "every model" if models is None else ", ".join(models)


def region_text(region: str | None) -> str:
    return region or "any region"


def limit_text(limit: int | None) -> str:
    return "no limit" if limit is None else per_day(limit)


def monthly_limit_text(limit: int | None) -> str:
    return "no monthly limit" if limit is None else per_month(limit)


def expiry_text(expires_at: datetime | None, now: datetime) -> str:
    if expires_at is None:
        return "never expires"
    if expires_at <= now:
        return f"expired {when(expires_at)}"
    return f"expires {when(expires_at)} (in {age_text(expires_at - now)})"


def rates_text(policy: KeyPolicy) -> str:
    parts = []
    if policy.requests_per_minute is not None:
        parts.append(f"{plural(policy.requests_per_minute, 'request')} a minute")
    if policy.tokens_per_minute is not None:
        parts.append(f"{plural(policy.tokens_per_minute, 'token')} a minute")
    if policy.max_concurrent is not None:
        parts.append(f"{policy.max_concurrent} at once")
    return " · ".join(parts) or "no rate limits"


def networks_text(allowed_ips: Sequence[str] | None) -> str:
    return "any address" if allowed_ips is None else "from " + ", ".join(allowed_ips)


def policy_lines(policy: KeyPolicy, now: datetime) -> tuple[str, ...]:
    """The policy for a table cell: only what is set, in words."""
    lines = []
    if policy.monthly_limit is not None:
        lines.append(monthly_limit_text(policy.monthly_limit))
    if policy.has_rate_limits:
        lines.append(rates_text(policy))
    if policy.allowed_ips is not None:
        lines.append(networks_text(policy.allowed_ips))
    if policy.expires_at is not None:
        lines.append(expiry_text(policy.expires_at, now))
    return tuple(lines)


def age_text(age: timedelta) -> str:
    if age.days >= 1:
        return plural(age.days, "day")
    hours = int(age.total_seconds() // 3600)
    return plural(hours, "hour") if hours else "less than an hour"


FLAG_NAMES = {
    "new_address": "New address",
    "new_user_agent": "New client",
    "spend_spike": "Spend spike",
    "over_hold": "Over hold",
}


def flag_text(kind: str, subject: str) -> str:
    return f"{FLAG_NAMES.get(kind, kind)}: {subject}"


@dataclass(frozen=True)
class FlagView:
    """An unexpected-usage flag for people, with what its acknowledge form posts."""

    kind: str
    subject: str
    label: str  # "New address"
    text: str  # "first use from address 203.0.113.7"
    at: str
    at_iso: str
    acknowledged: str | None  # "by session of lr-mk-… (dashboard), 2026-03-02 10:00 UTC"


def flag_view(flag: UsageFlag) -> FlagView:
    acknowledged = (
        f"by {flag.acknowledged_by}, {when(flag.acknowledged_at)}" if flag.acknowledged else None
    )
    return FlagView(
        kind=flag.kind,
        subject=flag.subject,
        label=FLAG_NAMES.get(flag.kind, flag.kind),
        text=flag.describe(),
        at=when(flag.at),
        at_iso=iso(flag.at),
        acknowledged=acknowledged,
    )


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
    flags: tuple[FlagView, ...] = ()  # unexpected usage, oldest first
    policy: tuple[str, ...] = ()  # monthly limit, rates, networks, expiry: what is set
    monthly_limit: str = "no monthly limit"
    rates: str = "no rate limits"
    networks: str = "any address"
    expiry: str = "never expires"
    rotatable: bool = False  # the access policy's answer: changeable and not yet rotated

    @property
    def open_flags(self) -> int:
        return sum(1 for flag in self.flags if flag.acknowledged is None)


def key_row(
    key: ApiKey,
    now: datetime,
    spent_today: int = 0,
    last_used_at: datetime | None = None,
    flags: Sequence[UsageFlag] = (),
) -> KeyRow:
    access = key.access_at(now)  # the one answer (domain.access)
    status = access.status
    age = now - key.created_on
    return KeyRow(
        id=str(key.id),
        name=key.name,
        display=key.display,
        status=status,
        models=models_text(key.scope.models),
        region=region_text(key.scope.region),
        daily_limit=limit_text(key.scope.daily_limit),
        spent_today=money(spent_today),
        created=when(key.created_on),
        created_iso=iso(key.created_on),
        last_used=when(last_used_at),
        age=age_text(age),
        rotate_warning=access.usable and rotation_due(key.created_on, key.policy, now),
        grace_until=when(key.grace_deadline) if status == "rotating" else None,
        changeable=access.changeable,
        rotated=key.successor_id is not None,
        flags=tuple(flag_view(flag) for flag in flags),
        policy=policy_lines(key.policy, now),
        monthly_limit=monthly_limit_text(key.policy.monthly_limit),
        rates=rates_text(key.policy),
        networks=networks_text(key.policy.allowed_ips),
        expiry=expiry_text(key.policy.expires_at, now),
        rotatable=access.rotatable,
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
    "PolicyChanged": "Policy changed",
    "Renamed": "Renamed",
    "Rotated": "Rotated",
    "Revoked": "Revoked",
    "FlagAcknowledged": "Unexpected usage acknowledged",
    "UsedAfterRevocation": "Used after revocation (refused)",
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
    if kind == "PolicyChanged":
        policy = KeyPolicy.from_fields(**vars(event))
        details += [
            ("Monthly limit", monthly_limit_text(policy.monthly_limit), None),
            ("Rate limits", rates_text(policy), None),
            ("Addresses", networks_text(policy.allowed_ips), None),
            ("Expiry", "never" if policy.expires_at is None else when(policy.expires_at), None),
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
    if kind == "FlagAcknowledged":
        details.append(("Flag", flag_text(str(event.kind), str(event.subject)), None))
    if kind == "UsedAfterRevocation":
        details.append(("Attempts", str(event.count), None))
        details.append(("From", str(event.client_ip or "unknown address"), None))
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
    api: str | None = None  # once usage rows carry it (release 0.3 metering)
    cost_source: str | None = None
    flags: tuple[str, ...] = ()
    unbilled: str | None = None  # over_hold: what the usage cost beyond the hold, not charged


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
        cost=money(int(row["cost"])),
        status=row["status"],
        latency_ms=int(row["latency_ms"]),
        streamed=bool(row["streamed"]),
        api=row.get("api"),
        cost_source=row.get("cost_source"),
        flags=tuple(orjson.loads(row["flags"])) if row.get("flags") else (),
        unbilled=money(int(row["unbilled"])) if row.get("unbilled") else None,
    )

"""How keys and money look at the edges (API, CLI, dashboard): one place, one shape (API.md)."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from domain.keys import ApiKey
from domain.money import format_credits
from domain.policy import KeyPolicy, rotation_due
from projections.schema import from_us


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def key_json(
    key: ApiKey,
    now: datetime,
    *,
    spent_today: int = 0,
    last_used_at: datetime | None = None,
) -> dict[str, Any]:
    """The public KEY shape. Never contains the token or its hash."""
    scope = key.scope
    access = key.access_at(now)
    ended = access.ended_at if access.state in ("revoked", "grace_ended") else None
    return {
        "id": str(key.id),
        "name": key.name,
        "display": key.display,
        "prefix": key.prefix,
        "last4": key.last4,
        "status": access.status,
        "models": list(scope.models) if scope.models is not None else None,
        "region": scope.region,
        "daily_limit": format_credits(scope.daily_limit) if scope.daily_limit is not None else None,
        "created_at": iso(key.created_on),
        "last_used_at": iso(last_used_at),
        "revoked_at": iso(ended),
        "rotation_grace_until": iso(key.grace_deadline),
        "predecessor_id": str(key.predecessor_id) if key.predecessor_id else None,
        "successor_id": str(key.successor_id) if key.successor_id else None,
        "spent_today": format_credits(spent_today),
        "account_id": str(key.account_id),
        **policy_json(key.policy),
        "changeable": access.changeable,
        "rotation_due": access.usable and rotation_due(key.created_on, key.policy, now),
    }


def policy_json(policy: KeyPolicy) -> dict[str, Any]:
    """The key policy's fields of the KEY shape (API.md, Key policy)."""
    return {
        "expires_at": iso(policy.expires_at),
        "requests_per_minute": policy.requests_per_minute,
        "tokens_per_minute": policy.tokens_per_minute,
        "max_concurrent": policy.max_concurrent,
        "allowed_ips": list(policy.allowed_ips) if policy.allowed_ips is not None else None,
        "monthly_limit": (
            format_credits(policy.monthly_limit) if policy.monthly_limit is not None else None
        ),
    }


def key_state_json(key: ApiKey | None, as_of: datetime) -> dict[str, Any] | None:
    """The KEY a replay of its events made by `as_of` (None before it existed). Spend and last
    use are not in a key's events, so they are null."""
    if key is None:
        return None
    return {**key_json(key, as_of), "spent_today": None, "last_used_at": None}


def usage_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public USAGE shape, from a usage-history row (queries.management.usage_page)."""
    return {
        "request_id": row["request_id"],
        "at": iso(from_us(row["at_us"])),
        "key_id": row["key_id"],
        "key_name": row["key_name"],
        "model": row["model"],
        "provider": row["provider"],
        "region": row["region"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost": format_credits(row["cost"]),
        "status": row["status"],
        "latency_ms": row["latency_ms"],
        "streamed": bool(row["streamed"]),
        "client_ip": row["client_ip"],
        "user_agent": row["user_agent"],
        "api": row["api"],
        "cached_prompt_tokens": row["cached_prompt_tokens"],
        "cache_write_tokens": row["cache_write_tokens"],
        "reasoning_tokens": row["reasoning_tokens"],
        "cost_source": row["cost_source"],
        "upstream_cost": row["upstream_cost"],
        # the upstream reported more than the hold: the difference was served, not charged
        "over_hold": "over_hold" in orjson.loads(row["flags"]),
        "unbilled": format_credits(row["unbilled"]),
    }


# Event attributes that are the envelope (rendered as version/at) or secret (never shown).
_EVENT_ENVELOPE = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic"}
)
_EVENT_SECRET = frozenset({"token_hash"})
_EVENT_MONEY = frozenset(
    {
        "daily_limit",
        "monthly_limit",
        "amount",
        "cost",
        "held",
        "opening_balance",
        "closing_balance",
    }
)


def key_event_json(event: Any) -> dict[str, Any]:
    """One event of a key's stream: `{version, type, at, …fields}`. Never the token's hash;
    money as decimal strings, ids and times as strings."""
    fields = {
        name: _event_value(name, value)
        for name, value in vars(event).items()
        if name not in _EVENT_ENVELOPE and name not in _EVENT_SECRET
    }
    return {
        "version": event.originator_version,
        "type": type(event).__name__,
        "at": iso(event.timestamp),
        **fields,
    }


def _event_value(name: str, value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return iso(value)
    if name in _EVENT_MONEY and isinstance(value, int) and not isinstance(value, bool):
        return format_credits(value)
    return value


def management_key_json(key: Any, *, last_used_at: datetime | None = None) -> dict[str, Any]:
    """The public MGMT_KEY shape (application.management_keys.ManagementKey). Never a token."""
    revoked_at = key.revoked_at
    if revoked_at is None and key.status == "revoked":  # rotated and past its grace
        revoked_at = key.grace_deadline
    return {
        "id": str(key.id),
        "name": key.name,
        "display": key.display,
        "prefix": key.prefix,
        "last4": key.last4,
        "status": key.status,
        "created_at": iso(key.created_at),
        "last_used_at": iso(last_used_at),
        "revoked_at": iso(revoked_at),
        "rotation_grace_until": iso(key.grace_deadline),
        "predecessor_id": key.predecessor_id,
        "successor_id": key.successor_id,
    }

"""How keys and money look at the edges (API, CLI, dashboard): one place, one shape (API.md)."""

from datetime import datetime
from typing import Any

from domain.keys import ApiKey
from domain.money import format_credits


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
    return {
        "id": str(key.id),
        "name": key.name,
        "display": key.display,
        "prefix": key.prefix,
        "last4": key.last4,
        "status": key.status_at(now),
        "models": list(scope.models) if scope.models is not None else None,
        "region": scope.region,
        "daily_limit": format_credits(scope.daily_limit) if scope.daily_limit is not None else None,
        "created_at": iso(key.created_on),
        "last_used_at": iso(last_used_at),
        "revoked_at": iso(key.revoked_at or _expired_at(key, now)),
        "rotation_grace_until": iso(key.grace_deadline),
        "predecessor_id": str(key.predecessor_id) if key.predecessor_id else None,
        "successor_id": str(key.successor_id) if key.successor_id else None,
        "spent_today": format_credits(spent_today),
        "account_id": str(key.account_id),
    }


def _expired_at(key: ApiKey, now: datetime) -> datetime | None:
    if key.grace_deadline is not None and now >= key.grace_deadline:
        return key.grace_deadline
    return None

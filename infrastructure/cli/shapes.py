"""Accounts and keys as the management API shapes them, for people (records, rows) and scripts."""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from domain.accounts import Account
from domain.errors import NotFound
from domain.keys import ApiKey
from domain.money import format_credits
from infrastructure.cli.context import Context
from infrastructure.cli.errors import redact_tokens
from infrastructure.cli.output import render_record, when
from infrastructure.times import parse_time_text
from infrastructure.views import iso, key_json
from projections.queries.management import last_used, meters

STORE_IT_NOW = (
    "store this token now; it is shown only once "
    "(a secret manager, a git-ignored .env file, or the OS keychain)"
)


def _models_cell(models: list[str] | None) -> str:
    return ", ".join(models) if models is not None else "all"


def key_record(key: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("id", key["id"]),
        ("name", key["name"]),
        ("display", key["display"]),
        ("status", key["status"]),
        ("models", _models_cell(key["models"])),
        ("region", key["region"] or "any"),
        ("daily limit", key["daily_limit"] or "none"),
        ("monthly limit", key["monthly_limit"] or "none"),
        ("spent today", key["spent_today"]),
        (
            "expires",
            when(key["expires_at"], "never") + (" (rotate)" if key["rotation_due"] else ""),
        ),
        ("requests per minute", _or_none(key["requests_per_minute"])),
        ("tokens per minute", _or_none(key["tokens_per_minute"])),
        ("max concurrent", _or_none(key["max_concurrent"])),
        ("allowed ips", ", ".join(key["allowed_ips"]) if key["allowed_ips"] else "any"),
        ("last used", when(key["last_used_at"], "never")),
        ("created", when(key["created_at"])),
        ("revoked", when(key["revoked_at"])),
        ("rotation grace until", when(key["rotation_grace_until"])),
        ("predecessor", key["predecessor_id"] or "-"),
        ("successor", key["successor_id"] or "-"),
        ("account", key["account_id"]),
    ]


KEY_COLUMNS = (
    "ID",
    "NAME",
    "DISPLAY",
    "STATUS",
    "MODELS",
    "REGION",
    "DAILY LIMIT",
    "SPENT TODAY",
    "LAST USED",
    "AGE",
    "EXPIRES",
)


def _or_none(value: object) -> str:
    return "none" if value is None else str(value)


def _age(created_at: str) -> str:
    created = parse_time_text(created_at)
    days = (datetime.now(UTC) - created).days
    return f"{days}d"


def key_row(key: dict[str, Any]) -> list[str]:
    return [
        key["id"],
        key["name"],
        key["display"],
        key["status"],
        _models_cell(key["models"]),
        key["region"] or "any",
        key["daily_limit"] or "none",
        key["spent_today"],
        when(key["last_used_at"], "never"),
        _age(key["created_at"]),
        when(key["expires_at"], "never") + (" rotate" if key["rotation_due"] else ""),
    ]


def account_record(account: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("id", account["id"]),
        ("name", account["name"]),
        ("created", when(account["created_at"])),
        ("balance", account["balance"]),
        ("held", account["held"]),
        ("available", account["available"]),
        ("spent today", account["spent_today"]),
    ]


ACCOUNT_COLUMNS = ("ID", "NAME", "BALANCE", "HELD", "SPENT TODAY", "CREATED")


def account_row(account: dict[str, Any]) -> list[str]:
    return [
        account["id"],
        account["name"],
        account["balance"],
        account["held"],
        account["spent_today"],
        when(account["created_at"]),
    ]


# Reading: accounts and keys as the API shapes them ---------------------------------------------


def find_account(ctx: Context, id_or_name: str) -> Account:
    try:
        return ctx.runtime.app.find_account(id_or_name)
    except NotFound:
        raise NotFound(f"no account {redact_tokens(id_or_name)!r} (by id or name)") from None


def account_json(
    ctx: Context, account_id: UUID, name: str, created_at: datetime | None
) -> dict[str, Any]:
    """ACCOUNT = {id, name, created_at, balance, held, available, spent_today} (decimal strings)."""
    view = ctx.runtime.spend.view(account_id).result()
    return {
        "id": str(account_id),
        "name": name,
        "created_at": iso(created_at),
        "balance": format_credits(view.balance),
        "held": format_credits(view.held),
        "available": format_credits(view.available),
        "spent_today": format_credits(view.spent_today),
    }


def key_views(ctx: Context, keys: Sequence[ApiKey]) -> list[dict[str, Any]]:
    """KEYs as the management API shows them: today's spend from the ledger (the key's rotation
    lineage's), last use from the usage history (brought up to date first)."""
    runtime = ctx.runtime
    views = {
        account_id: runtime.spend.view(account_id).result()
        for account_id in {key.account_id for key in keys}
    }
    used = runtime.reads.ask(last_used, [key.id for key in keys])
    metered = runtime.reads.ask(meters, [key.id for key in keys])
    now = ctx.now()
    return [
        key_json(
            key,
            now,
            spent_today=views[key.account_id].limits_of(metered[str(key.id)]).spent_today,
            last_used_at=used.get(str(key.id)),
        )
        for key in keys
    ]


def key_view(ctx: Context, key: ApiKey) -> dict[str, Any]:
    return key_views(ctx, [key])[0]


def show_key(ctx: Context, key: ApiKey) -> None:
    view = key_view(ctx, key)
    if ctx.format == "json":
        ctx.json(view)
    else:
        ctx.out(render_record(key_record(view)))


def show_issued_token(
    ctx: Context, token: str, data: dict[str, Any], record: list[tuple[str, str]]
) -> None:
    """The one moment a token is shown: once, on stdout, with the advice to store it."""
    if ctx.format == "json":
        ctx.json({"key": token, "data": data})
    else:
        ctx.out(render_record(record))
        ctx.out()
        ctx.out(f"token  {token}")
    ctx.warn(STORE_IT_NOW)

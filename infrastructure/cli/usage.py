"""Commands: usage, the usage history."""

import argparse
import csv
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.errors import NotFound
from infrastructure.cli.context import Context
from infrastructure.cli.errors import UsageError
from infrastructure.cli.output import render_table, when
from infrastructure.cli.shapes import find_account
from infrastructure.escaping import csv_cell
from infrastructure.views import usage_json
from projections.queries.management import all_accounts, usage_page
from projections.schema import to_us


def _us(moment: datetime | None) -> int | None:
    return to_us(moment) if moment is not None else None


# Commands: usage --------------------------------------------------------------------------------

USAGE_FIELDS = (
    "request_id",
    "at",
    "account_id",
    "key_id",
    "key_name",
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
    "api",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_source",
    "upstream_cost",
    "over_hold",
    "unbilled",
)
USAGE_TABLE = (
    "AT",
    "KEY",
    "API",
    "MODEL",
    "TOKENS IN/OUT",
    "COST",
    "STATUS",
    "LATENCY",
    "CLIENT",
)


def usage_command(ctx: Context, args: argparse.Namespace) -> None:
    """The usage history, newest first: one row per completion, with the key's name then."""
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be before --until")
    rows = usage_rows(ctx, args)
    if ctx.format == "json":
        ctx.json({"data": rows})
    elif ctx.format == "csv":
        writer = csv.DictWriter(ctx.stdout, fieldnames=USAGE_FIELDS)
        writer.writeheader()
        writer.writerows({k: csv_cell(row[k]) for k in USAGE_FIELDS} for row in rows)
    else:
        ctx.out(render_table(USAGE_TABLE, (_usage_row(row) for row in rows)))


def usage_rows(ctx: Context, args: argparse.Namespace) -> list[dict[str, Any]]:
    """USAGE rows (with account_id) of the accounts asked for, newest first, at most --limit."""
    found: list[tuple[int, dict[str, Any]]] = []
    for account_id in _usage_accounts(ctx, args):
        page = ctx.runtime.reads.ask(
            usage_page,
            account_id,
            key_id=args.key,
            model=args.model,
            since_us=_us(args.since),
            until_us=_us(args.until),
            limit=args.limit,
        )
        found.extend(
            (row["position"], {**usage_json(row), "account_id": str(account_id)}) for row in page
        )
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [row for _, row in found[: args.limit]]


def _usage_accounts(ctx: Context, args: argparse.Namespace) -> list[UUID]:
    account = find_account(ctx, args.account) if args.account else None
    if args.key is not None:
        key = ctx.runtime.app.get_key(args.key)
        if account is not None and key.account_id != account.id:
            raise NotFound(f"no key {args.key} in account {account.name!r}")
        return [key.account_id]
    if account is not None:
        return [account.id]
    return [row.account_id for row in ctx.runtime.reads.ask(all_accounts)]


def _usage_row(row: dict[str, Any]) -> list[str]:
    return [
        when(row["at"]),
        row["key_name"],
        row["api"],
        row["model"],
        f"{row['prompt_tokens']}/{row['completion_tokens']}",
        row["cost"] + (" (estimated)" if row["cost_source"] == "estimated" else ""),
        row["status"],
        f"{row['latency_ms']} ms",
        row["client_ip"] or "-",
    ]

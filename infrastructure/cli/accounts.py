"""Commands: accounts (create, list, show) and credits (add, adjust)."""

import argparse

from domain.money import format_credits, parse_credits
from infrastructure.cli.arguments import parse_signed_credits
from infrastructure.cli.context import Context
from infrastructure.cli.errors import UsageError
from infrastructure.cli.output import render_record, render_table
from infrastructure.cli.shapes import (
    ACCOUNT_COLUMNS,
    account_json,
    account_record,
    account_row,
    find_account,
    show_issued_token,
)
from projections.queries.management import all_accounts

# Commands: accounts and credits -----------------------------------------------------------------


def accounts_create(ctx: Context, args: argparse.Namespace) -> None:
    credits = parse_credits(args.credits) if args.credits is not None else 0
    opened = ctx.runtime.app.open_account(args.name, ctx.actor, credits=credits)
    account = opened.account
    data = account_json(ctx, account.id, account.name, account.created_on)
    management_key = {"id": str(opened.management_key_id), "display": opened.token.display}
    show_issued_token(
        ctx,
        opened.token.value,
        {**data, "management_key": management_key},
        [
            *account_record(data),
            ("management key id", management_key["id"]),
            ("management key", management_key["display"]),
        ],
    )


def accounts_list(ctx: Context, args: argparse.Namespace) -> None:
    rows = ctx.runtime.reads.ask(all_accounts)
    data = [account_json(ctx, row.account_id, row.name, row.opened) for row in rows]
    if ctx.format == "json":
        ctx.json({"data": data})
        return
    ctx.out(render_table(ACCOUNT_COLUMNS, (account_row(account) for account in data)))


def accounts_show(ctx: Context, args: argparse.Namespace) -> None:
    account = find_account(ctx, args.account)
    data = account_json(ctx, account.id, account.name, account.created_on)
    data["keys"] = len(account.api_key_ids)
    data["management_keys"] = [
        {"id": key_id, "display": entry["display"], "revoked": entry["revoked"]}
        for key_id, entry in account.management_keys.items()
    ]
    if ctx.format == "json":
        ctx.json(data)
        return
    management = [
        (f"management key {mk['id']}", mk["display"] + (" (revoked)" if mk["revoked"] else ""))
        for mk in data["management_keys"]
    ]
    ctx.out(render_record([*account_record(data), ("keys", str(data["keys"])), *management]))


def credits_add(ctx: Context, args: argparse.Namespace) -> None:
    amount = parse_credits(args.amount, allow_zero=False)
    account = find_account(ctx, args.account)
    ctx.runtime.spend.fund(account.id, amount, ctx.actor).result()
    data = {
        **account_json(ctx, account.id, account.name, account.created_on),
        "added": format_credits(amount),
    }
    if ctx.format == "json":
        ctx.json(data)
    else:
        ctx.out(render_record([("added", data["added"]), *account_record(data)]))


# Commands: credits adjust -------------------------------------------------------------------------


def credits_adjust(ctx: Context, args: argparse.Namespace) -> None:
    """A correction on today's ledger page (never an edit): positive credits back, negative
    charges more. It shows in `audit` and in the balance."""
    amount = parse_signed_credits(args.amount)
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must say why (it is kept in the ledger)")
    account = find_account(ctx, args.account)
    if args.key is not None:
        ctx.runtime.app.get_key(args.key, account.id)  # a key of this account, or NotFound
    ctx.runtime.spend.adjust(account.id, amount, reason, ctx.actor, args.key).result()
    data = {
        **account_json(ctx, account.id, account.name, account.created_on),
        "adjusted": format_credits(amount),
        "reason": reason,
        "key_id": str(args.key) if args.key else None,
    }
    if ctx.format == "json":
        ctx.json(data)
        return
    pairs = [("adjusted", data["adjusted"]), ("reason", reason)]
    if args.key is not None:
        pairs.append(("key", str(args.key)))
    ctx.out(render_record([*pairs, *account_record(data)]))

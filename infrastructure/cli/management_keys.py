"""Commands: accounts keys (list, create, revoke, rotate): an account's management keys."""

import argparse
from datetime import timedelta
from typing import Any
from uuid import UUID

from application import management_keys as use_cases
from infrastructure.cli.context import Context
from infrastructure.cli.errors import Refused
from infrastructure.cli.output import render_record, render_table, when
from infrastructure.cli.shapes import find_account, show_issued_token
from infrastructure.key_uses import last_uses
from infrastructure.views import management_key_json
from projections.queries.management import management_key_account

COLUMNS = ("ID", "NAME", "KEY", "STATUS", "CREATED", "REVOKED")


def _row(view: dict[str, Any]) -> list[str]:
    return [
        view["id"],
        view["name"],
        view["display"],
        view["status"],
        when(view["created_at"]),
        when(view["revoked_at"]),
    ]


def _record(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(label.lower(), value) for label, value in zip(COLUMNS, _row(view), strict=True)]


def _account_of(ctx: Context, key_id: UUID) -> UUID:
    """The account a management key belongs to, from the key lookup."""
    account = ctx.runtime.reads.ask(management_key_account, key_id)
    if account is None:
        raise Refused(f"no management key {key_id}")
    return account


def management_keys_list(ctx: Context, args: argparse.Namespace) -> None:
    account = find_account(ctx, args.account)
    found = use_cases.list_management_keys(ctx.runtime.app, account.id)
    used = last_uses(ctx.runtime.engine, [key.id for key in found])
    views = [management_key_json(key, last_used_at=used.get(key.id)) for key in found]
    if ctx.format == "json":
        ctx.json({"data": views})
    else:
        ctx.out(render_table(COLUMNS, (_row(view) for view in views)))


def management_keys_create(ctx: Context, args: argparse.Namespace) -> None:
    account = find_account(ctx, args.account)
    issued = use_cases.issue_management_key(ctx.runtime.app, account.id, ctx.actor, args.name)
    view = management_key_json(issued.key)
    show_issued_token(ctx, issued.token.value, view, _record(view))


def management_keys_revoke(ctx: Context, args: argparse.Namespace) -> None:
    account_id = _account_of(ctx, args.key_id)
    key = use_cases.revoke_management_key(ctx.runtime.app, account_id, args.key_id, ctx.actor)
    view = management_key_json(key)
    if ctx.format == "json":
        ctx.json(view)
    else:
        ctx.out(render_record(_record(view)))


def management_keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    account_id = _account_of(ctx, args.key_id)
    issued = use_cases.rotate_management_key(
        ctx.runtime.app, account_id, args.key_id, ctx.actor, timedelta(seconds=args.grace)
    )
    view = management_key_json(issued.key)
    show_issued_token(ctx, issued.token.value, view, _record(view))
    old = use_cases.get_management_key(ctx.runtime.app, account_id, args.key_id)
    until = f" until {when(management_key_json(old)['rotation_grace_until'])}"
    ctx.note(
        f"the old key {old.display} is {old.status}{until if old.status == 'rotating' else ''}"
    )

"""Commands: keys (create, list, show, scope, rename, revoke, rotate)."""

import argparse
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from domain.scope import Scope
from infrastructure.cli.arguments import optional_credits
from infrastructure.cli.context import Context
from infrastructure.cli.env_file import EnvFile, warn_about_env_file
from infrastructure.cli.errors import UsageError
from infrastructure.cli.output import render_record, render_table, when
from infrastructure.cli.shapes import (
    KEY_COLUMNS,
    _key_record,
    _key_row,
    find_account,
    key_view,
    key_views,
    show_issued_token,
    show_key,
)
from projections.forensics import flags_for_keys, summarize_flags

T = TypeVar("T")


# Commands: keys ---------------------------------------------------------------------------------


def keys_create(ctx: Context, args: argparse.Namespace) -> None:
    scope = Scope(
        tuple(args.model) if args.model else None, args.region, optional_credits(args.daily_limit)
    )
    account = find_account(ctx, args.account)
    if args.env_file is None:
        issued = ctx.runtime.ledger.create_key(account.id, args.name, scope, ctx.actor)
        view = key_view(ctx, issued.key)
        show_issued_token(ctx, issued.token.value, view, _key_record(view))
        return
    with EnvFile(Path(args.env_file), force=args.force_env_file) as env_file:
        issued = ctx.runtime.ledger.create_key(account.id, args.name, scope, ctx.actor)
        env_file.write_api_key(issued.token.value)
    view = key_view(ctx, issued.key)
    where = str(env_file.path.resolve())
    if ctx.format == "json":
        ctx.json({"data": view, "env_file": where})
    else:
        ctx.out(render_record([*_key_record(view), ("token written to", where)]))
    warn_about_env_file(ctx, env_file)


def keys_list(ctx: Context, args: argparse.Namespace) -> None:
    """An account's keys, with their unexpected-usage flags (a column; in JSON, `flags` by key
    id beside `data`, so each KEY keeps the API's shape)."""
    account = find_account(ctx, args.account)
    views = key_views(ctx, ctx.runtime.ledger.list_keys(account.id))
    ctx.runtime.projections.catch_up(["forensics"])
    flags = flags_for_keys(ctx.runtime.engine, [view["id"] for view in views])
    if ctx.format == "json":
        ctx.json(
            {
                "data": views,
                "flags": {key_id: [f.as_json() for f in found] for key_id, found in flags.items()},
            }
        )
    else:
        rows = [[*_key_row(view), summarize_flags(flags[view["id"]])] for view in views]
        ctx.out(render_table((*KEY_COLUMNS, "FLAGS"), rows))


def keys_show(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.ledger.get_key(args.key_id))


SCOPE_OPTIONS = ("model", "all_models", "region", "any_region", "daily_limit", "no_daily_limit")


def keys_scope(ctx: Context, args: argparse.Namespace) -> None:
    if all(getattr(args, option) in (None, False) for option in SCOPE_OPTIONS):
        raise UsageError(
            "nothing to change: give --model, --all-models, --region, --any-region, "
            "--daily-limit or --no-daily-limit"
        )
    current = ctx.runtime.ledger.get_key(args.key_id).scope
    models = tuple(args.model) if args.model is not None else current.models
    region = _given_or(args.region, current.region)
    daily_limit = _given_or(optional_credits(args.daily_limit), current.daily_limit)
    scope = Scope(
        models=None if args.all_models else models,
        region=None if args.any_region else region,
        daily_limit=None if args.no_daily_limit else daily_limit,
    )
    show_key(ctx, ctx.runtime.ledger.scope_key(args.key_id, scope, ctx.actor))


def _given_or(given: T | None, current: T | None) -> T | None:
    """A part of the scope: the new value when the option was given, else the current one."""
    return given if given is not None else current


def keys_rename(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.ledger.rename_key(args.key_id, args.name, ctx.actor))


def keys_revoke(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.ledger.revoke_key(args.key_id, ctx.actor, reason=args.reason))


def keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    issued = ctx.runtime.ledger.rotate_key(
        args.key_id, ctx.actor, grace=timedelta(seconds=args.grace)
    )
    old = key_view(ctx, ctx.runtime.ledger.get_key(args.key_id))
    view = key_view(ctx, issued.key)
    show_issued_token(ctx, issued.token.value, view, _key_record(view))
    until = f" until {when(old['rotation_grace_until'])}" if old["status"] == "rotating" else ""
    ctx.note(f"the old key {old['display']} is {old['status']}{until}")

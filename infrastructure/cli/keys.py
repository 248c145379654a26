"""Commands: keys (create, list, show, scope, rename, revoke, rotate)."""

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from domain.errors import InvalidPolicy
from domain.policy import KeyPolicy, PolicyChanges, parse_duration
from domain.scope import Scope, ScopeChanges, Served
from infrastructure.catalogue import ConfigError
from infrastructure.cli.arguments import optional_credits
from infrastructure.cli.context import Context
from infrastructure.cli.env_file import EnvFile, warn_about_env_file
from infrastructure.cli.errors import Refused, UsageError
from infrastructure.cli.output import render_record, render_table, when
from infrastructure.cli.shapes import (
    KEY_COLUMNS,
    find_account,
    key_record,
    key_row,
    key_view,
    key_views,
    show_issued_token,
    show_key,
)
from infrastructure.served import served
from projections.queries.forensics import flags_for_keys, summarize_flags

# Commands: keys ---------------------------------------------------------------------------------


def served_by_gateway(ctx: Context) -> Served:
    """What the configured gateway serves (the catalogue `serve` would load)."""
    from infrastructure.server import load_catalogue_for

    try:
        return served(load_catalogue_for(ctx.settings))
    except ConfigError as error:
        raise Refused(f"cannot check the scope against the catalogue: {error}") from None


def policy_changes(ctx: Context, args: argparse.Namespace) -> PolicyChanges:
    """The key policy options given (clearing ones as None), checked by the domain's rules."""
    changes: PolicyChanges = {}
    if args.expires_at is not None:
        changes["expires_at"] = args.expires_at
    elif args.expires_in is not None:
        changes["expires_at"] = ctx.now() + parse_duration(args.expires_in)
    elif getattr(args, "no_expiry", False):
        changes["expires_at"] = None
    if getattr(args, "no_rate_limits", False):
        if args.rpm or args.tpm or args.max_concurrent:
            raise UsageError(
                "--no-rate-limits cannot be combined with --rpm, --tpm or --max-concurrent"
            )
        changes |= {"requests_per_minute": None, "tokens_per_minute": None, "max_concurrent": None}
    if args.rpm is not None:
        changes["requests_per_minute"] = args.rpm
    if args.tpm is not None:
        changes["tokens_per_minute"] = args.tpm
    if args.max_concurrent is not None:
        changes["max_concurrent"] = args.max_concurrent
    if args.allow_ip is not None:
        changes["allowed_ips"] = tuple(args.allow_ip)
    elif getattr(args, "any_ip", False):
        changes["allowed_ips"] = None
    if args.monthly_limit is not None:
        changes["monthly_limit"] = optional_credits(args.monthly_limit)
    elif getattr(args, "no_monthly_limit", False):
        changes["monthly_limit"] = None
    expires_at = changes.get("expires_at")
    if expires_at is not None and expires_at <= ctx.now():
        raise InvalidPolicy("the expiry is in the past; revoke the key to stop it now")
    given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
    KeyPolicy(**given)  # each part checked
    return changes


def keys_create(ctx: Context, args: argparse.Namespace) -> None:
    scope = Scope(
        tuple(args.model) if args.model else None, args.region, optional_credits(args.daily_limit)
    )
    served_by_gateway(ctx).check(scope.models, scope.region)
    policy = KeyPolicy(**policy_changes(ctx, args))
    account = find_account(ctx, args.account)
    if args.env_file is None:
        issued = ctx.runtime.app.create_key(account.id, args.name, scope, ctx.actor, policy)
        view = key_view(ctx, issued.key)
        show_issued_token(ctx, issued.token.value, view, key_record(view))
        if issued.warning:
            ctx.warn(issued.warning)
        return
    with EnvFile(Path(args.env_file), force=args.force_env_file) as env_file:
        issued = ctx.runtime.app.create_key(account.id, args.name, scope, ctx.actor, policy)
        env_file.write_api_key(issued.token.value)
    if issued.warning:
        ctx.warn(issued.warning)
    view = key_view(ctx, issued.key)
    where = str(env_file.path.resolve())
    if ctx.format == "json":
        ctx.json({"data": view, "env_file": where})
    else:
        ctx.out(render_record([*key_record(view), ("token written to", where)]))
    warn_about_env_file(ctx, env_file)


def keys_list(ctx: Context, args: argparse.Namespace) -> None:
    """An account's keys, with their unexpected-usage flags (a column; in JSON, `flags` by key
    id beside `data`, so each KEY keeps the API's shape)."""
    account = find_account(ctx, args.account)
    views = key_views(ctx, ctx.runtime.app.list_keys(account.id))
    flags = ctx.runtime.reads.ask(flags_for_keys, [view["id"] for view in views])
    if ctx.format == "json":
        ctx.json(
            {
                "data": views,
                "flags": {key_id: [f.as_json() for f in found] for key_id, found in flags.items()},
            }
        )
    else:
        rows = [[*key_row(view), summarize_flags(flags[view["id"]])] for view in views]
        ctx.out(render_table((*KEY_COLUMNS, "FLAGS"), rows))


def keys_show(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.app.get_key(args.key_id))


SCOPE_OPTIONS = ("model", "all_models", "region", "any_region", "daily_limit", "no_daily_limit")
POLICY_OPTIONS = (
    "expires_at",
    "expires_in",
    "no_expiry",
    "rpm",
    "tpm",
    "max_concurrent",
    "no_rate_limits",
    "allow_ip",
    "any_ip",
    "monthly_limit",
    "no_monthly_limit",
)


def keys_scope(ctx: Context, args: argparse.Namespace) -> None:
    """Change the named parts of the scope and policy; the others keep their value as of the
    save (merged inside the application's retry, as the management API's PATCH)."""
    if all(getattr(args, option) in (None, False) for option in SCOPE_OPTIONS + POLICY_OPTIONS):
        raise UsageError(
            "nothing to change: give --model, --all-models, --region, --any-region, "
            "--daily-limit, --no-daily-limit, or a policy option (--expires-in, --rpm, --tpm, "
            "--max-concurrent, --allow-ip, --monthly-limit, and their --no-…/--any-ip)"
        )
    scope: ScopeChanges = {}
    if args.model is not None or args.all_models:
        scope["models"] = None if args.all_models else tuple(args.model)
    if args.region is not None or args.any_region:
        scope["region"] = None if args.any_region else args.region
    if args.daily_limit is not None or args.no_daily_limit:
        scope["daily_limit"] = None if args.no_daily_limit else optional_credits(args.daily_limit)
    Scope(**scope)  # each part checked by the domain's rules before anything is read
    policy = policy_changes(ctx, args)
    app = ctx.runtime.app
    current = app.get_key(args.key_id).scope  # only to let a key keep what it already has
    served_by_gateway(ctx).check(scope.get("models"), scope.get("region"), current)
    show_key(
        ctx,
        app.update_key(args.key_id, ctx.actor, scope_changes=scope, policy_changes=policy),
    )


def keys_rename(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.app.rename_key(args.key_id, args.name, ctx.actor))


def keys_revoke(ctx: Context, args: argparse.Namespace) -> None:
    show_key(ctx, ctx.runtime.app.revoke_key(args.key_id, ctx.actor, reason=args.reason))


def keys_rotate(ctx: Context, args: argparse.Namespace) -> None:
    issued = ctx.runtime.app.rotate_key(args.key_id, ctx.actor, grace=timedelta(seconds=args.grace))
    old = key_view(ctx, ctx.runtime.app.get_key(args.key_id))
    view = key_view(ctx, issued.key)
    show_issued_token(ctx, issued.token.value, view, key_record(view))
    if issued.warning:
        ctx.warn(issued.warning)
    until = f" until {when(old['rotation_grace_until'])}" if old["status"] == "rotating" else ""
    ctx.note(f"the old key {old['display']} is {old['status']}{until}")

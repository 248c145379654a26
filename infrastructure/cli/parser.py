"""The argparse parser: every command, its options and the formats it offers."""

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from infrastructure.cli.accounts import (
    accounts_create,
    accounts_list,
    accounts_show,
    credits_add,
    credits_adjust,
)
from infrastructure.cli.arguments import parse_key_id, parse_seconds, parse_time, positive_int
from infrastructure.cli.audit import AUDIT_FORMATS, audit
from infrastructure.cli.context import PROG, Context
from infrastructure.cli.errors import UsageError
from infrastructure.cli.investigate import investigate
from infrastructure.cli.keys import (
    keys_create,
    keys_list,
    keys_rename,
    keys_revoke,
    keys_rotate,
    keys_scope,
    keys_show,
)
from infrastructure.cli.management_keys import (
    management_keys_create,
    management_keys_list,
    management_keys_revoke,
    management_keys_rotate,
)
from infrastructure.cli.operations import (
    projection_names,
    projections_rebuild,
    projections_run,
    projections_status,
    reconcile_command,
    serve,
)
from infrastructure.cli.scan import scan_command
from infrastructure.cli.usage import usage_command
from infrastructure.cli.verify import verify_command
from infrastructure.cli.webhooks import (
    webhooks_add,
    webhooks_deliveries,
    webhooks_list,
    webhooks_remove,
)

TABLE_JSON = ("table", "json")
USAGE_FORMATS = ("table", "json", "csv")
ALL_FORMATS = ("table", "json", "csv", "jsonl")


# The parser -------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


Handler = Callable[[Context, argparse.Namespace], int | None]  # None: 0, done


def _common_options(formats: Sequence[str]) -> argparse.ArgumentParser:
    """Options every command takes. SUPPRESS keeps a value given before the command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
        "(default: $LOWROUTER_DATABASE_URL, else sqlite:///lowrouter.db)",
    )
    common.add_argument(
        "--format", choices=formats, default=argparse.SUPPRESS, help="output for people or scripts"
    )
    return common


def _group(subparsers: Any, name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    children = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
    return children


def _command(
    subparsers: Any,
    name: str,
    handler: Handler,
    help_text: str,
    formats: Sequence[str] = TABLE_JSON,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, parents=[_common_options(formats)]
    )
    parser.set_defaults(handler=handler, formats=tuple(formats))
    return parser


def _add_account_commands(subparsers: Any) -> None:
    accounts = _group(subparsers, "accounts", "open and inspect accounts")
    create = _command(
        accounts, "create", accounts_create, "open an account (prints its management key once)"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--credits", metavar="AMOUNT", help="initial credits, e.g. 5 or 2.50")
    _command(accounts, "list", accounts_list, "every account with its balance")
    show = _command(accounts, "show", accounts_show, "one account: balance and keys")
    show.add_argument("account", metavar="ACCOUNT", help="account id or name")
    _add_management_key_commands(accounts)

    credits = _group(subparsers, "credits", "fund accounts and correct balances")
    add = _command(credits, "add", credits_add, "add credits to an account")
    add.add_argument("account", metavar="ACCOUNT", help="account id or name")
    add.add_argument("amount", metavar="AMOUNT", help="credits, e.g. 10 or 2.50")
    adjust = _command(
        credits, "adjust", credits_adjust, "correct a balance by a signed amount (never an edit)"
    )
    adjust.add_argument("account", metavar="ACCOUNT", help="account id or name")
    adjust.add_argument("amount", metavar="AMOUNT", help="signed credits: 1.5 back, -1.5 charged")
    adjust.add_argument("--reason", required=True, metavar="TEXT", help="kept in the ledger")
    adjust.add_argument(
        "--key", metavar="KEY_ID", type=parse_key_id, help="the key the correction concerns"
    )


def _add_management_key_commands(accounts: Any) -> None:
    group = _group(accounts, "keys", "an account's management keys (lr-mk-…)")
    listing = _command(group, "list", management_keys_list, "the account's management keys")
    listing.add_argument("account", metavar="ACCOUNT", help="account id or name")
    create = _command(
        group, "create", management_keys_create, "issue a management key (prints its token once)"
    )
    create.add_argument("account", metavar="ACCOUNT", help="account id or name")
    create.add_argument("--name", default="management key", metavar="NAME")
    revoke = _command(
        group, "revoke", management_keys_revoke, "revoke a management key; the next request fails"
    )
    revoke.add_argument("key_id", metavar="MGMT_KEY_ID", type=parse_key_id)
    rotate = _command(
        group, "rotate", management_keys_rotate, "replace a management key (prints the new token)"
    )
    rotate.add_argument("key_id", metavar="MGMT_KEY_ID", type=parse_key_id)
    rotate.add_argument(
        "--grace",
        type=parse_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long the old key keeps working (default 0)",
    )


def _add_scope_options(parser: argparse.ArgumentParser, *, clearing: bool) -> None:
    models = parser.add_mutually_exclusive_group()
    models.add_argument(
        "--model", action="append", metavar="ID", help="allow this model id (repeatable)"
    )
    region = parser.add_mutually_exclusive_group()
    region.add_argument("--region", metavar="R", help="pin requests to this region")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--daily-limit", metavar="AMOUNT", help="credits per UTC day")
    if clearing:
        models.add_argument("--all-models", action="store_true", help="allow every model")
        region.add_argument("--any-region", action="store_true", help="allow any region")
        limit.add_argument("--no-daily-limit", action="store_true", help="remove the daily limit")
    _add_policy_options(parser, clearing=clearing)


def _add_policy_options(parser: argparse.ArgumentParser, *, clearing: bool) -> None:
    """The key policy (API.md, Key policy): expiry, rates, networks, monthly limit."""
    expiry = parser.add_mutually_exclusive_group()
    expiry.add_argument("--expires-at", metavar="TIME", type=parse_time, help="ISO 8601 time")
    expiry.add_argument("--expires-in", metavar="DURATION", help="from now: 90d, 12h, 30m")
    parser.add_argument("--rpm", type=positive_int, metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=positive_int, metavar="N", help="tokens per minute")
    parser.add_argument(
        "--max-concurrent", type=positive_int, metavar="N", help="requests in flight at once"
    )
    ips = parser.add_mutually_exclusive_group()
    ips.add_argument(
        "--allow-ip", action="append", metavar="CIDR", help="allow this network (repeatable)"
    )
    monthly = parser.add_mutually_exclusive_group()
    monthly.add_argument("--monthly-limit", metavar="AMOUNT", help="credits per UTC month")
    if clearing:
        expiry.add_argument("--no-expiry", action="store_true", help="never expire")
        parser.add_argument(
            "--no-rate-limits",
            action="store_true",
            help="remove requests/tokens per minute and max concurrent",
        )
        ips.add_argument("--any-ip", action="store_true", help="allow any address")
        monthly.add_argument(
            "--no-monthly-limit", action="store_true", help="remove the monthly limit"
        )


def _add_key_commands(subparsers: Any) -> None:
    keys = _group(subparsers, "keys", "create, scope, rotate and revoke API keys")

    create = _command(keys, "create", keys_create, "create a key (prints its token once)")
    create.add_argument("--account", required=True, metavar="ACCOUNT", help="account id or name")
    create.add_argument("--name", required=True, metavar="NAME", help="where the key will be used")
    _add_scope_options(create, clearing=False)
    create.add_argument(
        "--env-file",
        metavar="PATH",
        help="append LOWROUTER_API_KEY=<token> to this file (mode 0600) instead of printing it",
    )
    create.add_argument(
        "--force-env-file",
        action="store_true",
        help="write --env-file even through a symlink or when others can read it",
    )

    listing = _command(keys, "list", keys_list, "an account's keys (never a token)")
    listing.add_argument("--account", required=True, metavar="ACCOUNT", help="account id or name")

    show = _command(keys, "show", keys_show, "one key")
    show.add_argument("key_id", metavar="KEY_ID", type=parse_key_id)

    scope = _command(keys, "scope", keys_scope, "change a key's scope; unnamed parts stay")
    scope.add_argument("key_id", metavar="KEY_ID", type=parse_key_id)
    _add_scope_options(scope, clearing=True)

    rename = _command(keys, "rename", keys_rename, "rename a key")
    rename.add_argument("key_id", metavar="KEY_ID", type=parse_key_id)
    rename.add_argument("name", metavar="NAME")

    revoke = _command(keys, "revoke", keys_revoke, "revoke a key; it fails on the next request")
    revoke.add_argument("key_id", metavar="KEY_ID", type=parse_key_id)
    revoke.add_argument("--reason", default="revoked", metavar="TEXT")

    rotate = _command(keys, "rotate", keys_rotate, "replace a key (prints the new token once)")
    rotate.add_argument("key_id", metavar="KEY_ID", type=parse_key_id)
    rotate.add_argument(
        "--grace",
        type=parse_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long the old key keeps working (default 0)",
    )


def _add_serve_command(subparsers: Any) -> None:
    parser = _command(subparsers, "serve", serve, "run the gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=positive_int, default=8080)
    parser.add_argument("--workers", type=positive_int, default=1, metavar="N")


def _add_usage_command(subparsers: Any) -> None:
    usage = _command(
        subparsers,
        "usage",
        usage_command,
        "usage history, newest first (every row carries the key's name)",
        USAGE_FORMATS,
    )
    usage.add_argument("--account", metavar="ACCOUNT", help="account id or name (default: all)")
    usage.add_argument("--key", metavar="KEY_ID", type=parse_key_id, help="one key's usage")
    usage.add_argument("--since", metavar="T", type=parse_time, help="from T (ISO 8601, or 2h, 7d)")
    usage.add_argument("--until", metavar="T", type=parse_time, help="before T")
    usage.add_argument("--model", metavar="ID", help="only this model")
    usage.add_argument("--limit", metavar="N", type=positive_int, default=100, help="default 100")


def _add_projection_commands(subparsers: Any) -> None:
    projections = _group(subparsers, "projections", "the read models built from the event log")
    _command(projections, "status", projections_status, "each read model's position and lag")
    rebuild = _command(
        projections,
        "rebuild",
        projections_rebuild,
        "drop read models and rebuild them from the log",
    )
    rebuild.add_argument("name", metavar="NAME", nargs="?", choices=projection_names())
    _command(
        projections,
        "run",
        projections_run,
        "follow the log in the foreground: projections, reconciler, chain (Ctrl-C stops)",
    )


def _add_audit_commands(subparsers: Any) -> None:
    audit_parser = _command(
        subparsers,
        "audit",
        audit,
        "replay a key's or an account's events and the state they made at a moment",
        AUDIT_FORMATS,
    )
    audit_parser.add_argument(
        "target",
        metavar="KEY_OR_ACCOUNT",
        nargs="?",
        help="key id, account id or name, or a key's token or display",
    )
    audit_parser.add_argument(
        "--as-of", metavar="T", type=parse_time, help="the state at T (ISO 8601, or 2h, 7d ago)"
    )
    audit_parser.add_argument(
        "--verify-balances",
        action="store_true",
        help="recompute every balance and daily spend from the events and compare with the "
        "read models (exit 1 on any difference)",
    )

    found = _command(
        subparsers,
        "investigate",
        investigate,
        "a leaked key's report: uses, addresses, spend since the leak, attempts after revocation",
    )
    found.add_argument(
        "target",
        metavar="TOKEN_OR_DISPLAY_OR_KEY_ID",
        help="the token (or '-' to read it from stdin, keeping it out of the shell's history), "
        "its display lr-sk-AbCd…wXyZ, or the key id",
    )
    found.add_argument(
        "--since", metavar="T", type=parse_time, help="when the leak may have begun (or 2h, 7d)"
    )
    found.add_argument("--revoke", action="store_true", help="revoke the key now, reason 'leak'")

    _command(subparsers, "reconcile", reconcile_command, "settle holds older than the hold timeout")

    verify_parser = _command(
        subparsers,
        "verify",
        verify_command,
        "check the event log against its hash chain; name the first tampered position",
    )
    verify_parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="after a clean check, write the chain's head (position and digest) to FILE, to keep "
        "outside the database",
    )
    verify_parser.add_argument(
        "--against",
        metavar="FILE",
        help="prove the log up to this checkpoint is unchanged (recomputed from the events alone)",
    )


def _add_webhook_commands(subparsers: Any) -> None:
    from domain.webhooks import EVENT_TYPES

    webhooks = _group(subparsers, "webhooks", "tell an account's endpoints what happens")
    add = _command(webhooks, "add", webhooks_add, "subscribe a URL (prints its secret once)")
    add.add_argument("account", metavar="ACCOUNT", help="account id or name")
    add.add_argument("url", metavar="URL")
    add.add_argument(
        "--event", action="append", required=True, choices=EVENT_TYPES, metavar="TYPE",
        help=f"an event type (repeatable): {', '.join(EVENT_TYPES)}",
    )  # fmt: skip
    listing = _command(webhooks, "list", webhooks_list, "an account's webhook endpoints")
    listing.add_argument("account", metavar="ACCOUNT", help="account id or name")
    remove = _command(webhooks, "remove", webhooks_remove, "stop sending to an endpoint")
    remove.add_argument("id", metavar="ID")
    deliveries = _command(
        webhooks, "deliveries", webhooks_deliveries, "an endpoint's deliveries and attempts"
    )
    deliveries.add_argument("id", metavar="ID")


def _add_scan_command(subparsers: Any) -> None:
    scan = _command(
        subparsers, "scan", scan_command, "find lowrouter tokens in files or a git history"
    )
    scan.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (default .)")
    scan.add_argument("--git", action="store_true", help="every commit of the repositories")
    scan.add_argument("--check", action="store_true", help="look each token up in the database")
    scan.add_argument(
        "--revoke", action="store_true", help="revoke the live keys found (reason leak)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="lowrouter operator CLI. Exit codes: 0 ok, 1 refused, 2 usage error.",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
        "(default: $LOWROUTER_DATABASE_URL, else sqlite:///lowrouter.db)",
    )
    parser.add_argument("--format", choices=ALL_FORMATS, default="table")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve_command(subparsers)
    _add_account_commands(subparsers)
    _add_key_commands(subparsers)
    _add_usage_command(subparsers)
    _add_audit_commands(subparsers)
    _add_projection_commands(subparsers)
    _add_webhook_commands(subparsers)
    _add_scan_command(subparsers)
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.format not in args.formats:
        offered = ", ".join(args.formats)
        raise UsageError(f"this command has no --format {args.format} (choose from {offered})")
    return args

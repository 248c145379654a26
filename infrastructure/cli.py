"""The operator CLI, `lowrouter`: parse, call one application method, render.

Every command is one small function `(Context, Namespace)` that returns None (exit 0) or an exit
code, registered on the parser with `_command(...)`. Output is a table for people or, with
`--format json`, the API.md shapes for scripts. Tokens are printed once, on creation, to stdout
(or written to an `--env-file`), and never anywhere else: lists and views show `display`.

Exit codes:
  0  ok
  1  refused: the domain said no (unknown account or key, revoking a revoked key, a negative,
     zero-where-positive or non-numeric amount, a bad name or scope), or the command failed
  2  usage error: unknown command or option, a missing argument, a malformed key id (not a
     UUID), a --format the command does not offer, bad configuration (SettingsError)

Amounts are decimal strings checked by the domain (`parse_credits`), so a bad amount is a
refusal (1), exactly as the management API refuses it. Errors are one line on stderr, prefixed
`lowrouter: `, with any token-shaped text reduced to its display form.
"""

import argparse
import getpass
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import orjson
from sqlalchemy import select

from domain.accounts import Account
from domain.actor import Actor
from domain.errors import DomainError, NotFound
from domain.keys import ApiKey
from domain.money import format_credits, parse_credits
from domain.scope import Scope
from domain.tokens import display_of
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings, SettingsError, load_settings
from infrastructure.views import iso, key_json
from projections.queries import last_used
from projections.schema import accounts, from_us

T = TypeVar("T")
PROG = "lowrouter"
TABLE_JSON = ("table", "json")
ALL_FORMATS = ("table", "json", "csv")
STORE_IT_NOW = (
    "store this token now; it is shown only once "
    "(a secret manager, a git-ignored .env file, or the OS keychain)"
)
_TOKEN_LIKE = re.compile(r"lr-(?:sk|mk)-[0-9A-Za-z]*+(?!…)")  # not one already shown as display


# Errors ----------------------------------------------------------------------------------------


class UsageError(Exception):
    """The command line itself is wrong (exit 2)."""


class Refused(Exception):
    """The command cannot be done as asked (exit 1)."""


def redact_tokens(text: str) -> str:
    """Reduce anything token-shaped to its display form, so no error can leak a token."""

    def shorten(match: re.Match[str]) -> str:
        found = match.group(0)
        return display_of(found) if len(found) >= 14 else found[:6] + "…"

    return _TOKEN_LIKE.sub(shorten, text)


def without_password(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def one_line(text: str) -> str:
    return " ".join(redact_tokens(text).split())


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


# Context: what every command gets ---------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    _settings: Settings | None = field(default=None, init=False)
    _runtime: Runtime | None = field(default=None, init=False)

    @property
    def format(self) -> str:
        return str(self.args.format)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(database_url=self.args.database_url)
        return self._settings

    @property
    def runtime(self) -> Runtime:
        """The ledger, spend control and projections, opened on first use."""
        if self._runtime is None:
            settings = self.settings
            try:
                self._runtime = open_runtime(settings)
            except Exception as error:
                where = without_password(settings.database_url)
                raise Refused(
                    f"cannot open the database {where}: {type(error).__name__}: {error}"
                ) from error
        return self._runtime

    @property
    def actor(self) -> Actor:
        return Actor("operator", f"cli:{_user_name()}")

    def now(self) -> datetime:
        return self.runtime.ledger.clock()

    def close(self) -> None:
        if self._runtime is not None:
            runtime, self._runtime = self._runtime, None
            runtime.close()

    # Output ---------------------------------------------------------------------------------

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {text}", file=self.stderr)

    def note(self, text: str) -> None:
        print(f"{PROG}: {text}", file=self.stderr)

    def json(self, data: Any) -> None:
        self.out(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in this environment (containers): still record something
        return "unknown"


# Rendering for people ---------------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Simple aligned columns: a header line, then one line per row."""
    lines = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def render_record(pairs: Sequence[tuple[str, str]]) -> str:
    """One object, a field per line: `label   value`."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in pairs)


def when(iso_text: str | None, empty: str = "-") -> str:
    """`2026-11-27T10:40:08.123456Z` -> `2026-11-27 10:40:08Z`."""
    return f"{iso_text[:19].replace('T', ' ')}Z" if iso_text else empty


def _models_cell(models: list[str] | None) -> str:
    return ", ".join(models) if models is not None else "all"


def _key_record(key: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("id", key["id"]),
        ("name", key["name"]),
        ("display", key["display"]),
        ("status", key["status"]),
        ("models", _models_cell(key["models"])),
        ("region", key["region"] or "any"),
        ("daily limit", key["daily_limit"] or "none"),
        ("spent today", key["spent_today"]),
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
)


def _key_row(key: dict[str, Any]) -> list[str]:
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
    ]


def _account_record(account: dict[str, Any]) -> list[tuple[str, str]]:
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


def _account_row(account: dict[str, Any]) -> list[str]:
    return [
        account["id"],
        account["name"],
        account["balance"],
        account["held"],
        account["spent_today"],
        when(account["created_at"]),
    ]


# Reading: accounts and keys as the API shapes them ---------------------------------------------


def parse_key_id(text: str) -> UUID:
    """argparse type for KEY_ID: a malformed id is a usage error, and never echoes a token."""
    if _TOKEN_LIKE.match(text):
        raise argparse.ArgumentTypeError(
            f"{redact_tokens(text)} is a token, not a key id; 'lowrouter keys list' shows key ids"
        )
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a key id (a UUID): {text[:40]!r}") from None


def optional_credits(text: str | None) -> int | None:
    return parse_credits(text) if text is not None else None


def find_account(ctx: Context, id_or_name: str) -> Account:
    try:
        return ctx.runtime.ledger.find_account(id_or_name)
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
        "spent_today": format_credits(sum(view.spent_today.values())),
    }


def key_views(ctx: Context, keys: Sequence[ApiKey]) -> list[dict[str, Any]]:
    """KEYs as the management API shows them: today's spend from the ledger, last use from the
    usage history (brought up to date first)."""
    runtime = ctx.runtime
    spent: dict[str, int] = {}
    for account_id in {key.account_id for key in keys}:
        spent.update(runtime.spend.view(account_id).result().spent_today)
    runtime.projections.catch_up(["usage"])
    used = last_used(runtime.engine, [key.id for key in keys])
    now = ctx.now()
    return [
        key_json(
            key,
            now,
            spent_today=spent.get(str(key.id), 0),
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
        ctx.out(render_record(_key_record(view)))


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


# Commands: accounts and credits -----------------------------------------------------------------


def accounts_create(ctx: Context, args: argparse.Namespace) -> None:
    credits = parse_credits(args.credits) if args.credits is not None else 0
    opened = ctx.runtime.ledger.open_account(args.name, ctx.actor, credits=credits)
    account = opened.account
    data = account_json(ctx, account.id, account.name, account.created_on)
    management_key = {"id": str(opened.management_key_id), "display": opened.token.display}
    show_issued_token(
        ctx,
        opened.token.value,
        {**data, "management_key": management_key},
        [
            *_account_record(data),
            ("management key id", management_key["id"]),
            ("management key", management_key["display"]),
        ],
    )


def accounts_list(ctx: Context, args: argparse.Namespace) -> None:
    runtime = ctx.runtime
    runtime.projections.catch_up(["keys"])
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(accounts.c.account_id, accounts.c.name, accounts.c.opened_us).order_by(
                accounts.c.opened_us, accounts.c.name
            )
        ).all()
    data = [account_json(ctx, UUID(row[0]), row[1], from_us(row[2])) for row in rows]
    if ctx.format == "json":
        ctx.json({"data": data})
        return
    ctx.out(render_table(ACCOUNT_COLUMNS, (_account_row(account) for account in data)))


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
    ctx.out(render_record([*_account_record(data), ("keys", str(data["keys"])), *management]))


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
        ctx.out(render_record([("added", data["added"]), *_account_record(data)]))


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
    with EnvFile(Path(args.env_file)) as env_file:
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
    account = find_account(ctx, args.account)
    views = key_views(ctx, ctx.runtime.ledger.list_keys(account.id))
    if ctx.format == "json":
        ctx.json({"data": views})
    else:
        ctx.out(render_table(KEY_COLUMNS, (_key_row(view) for view in views)))


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


# --env-file: the token goes into a file, never to the terminal ----------------------------------


class EnvFile:
    """`LOWROUTER_API_KEY=<token>` appended to a file created with mode 0600.

    Opened before the key is created, so a path that cannot be written refuses the command before
    a key exists whose token would be lost; a file this command created is removed if it fails.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.existed = path.exists()
        self.loose_mode: int | None = None
        self.had_api_key = False
        self._fd = -1

    def __enter__(self) -> "EnvFile":
        if self.path.is_dir():
            raise Refused(f"--env-file {self.path} is a directory")
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as error:
            raise Refused(f"cannot write --env-file {self.path}: {error.strerror}") from None
        mode = os.fstat(self._fd).st_mode & 0o777
        self.loose_mode = mode if mode & 0o077 else None
        return self

    def write_api_key(self, token: str) -> None:
        before = self.path.read_bytes() if self.existed else b""
        self.had_api_key = any(
            line.strip().removeprefix(b"export ").startswith(b"LOWROUTER_API_KEY=")
            for line in before.splitlines()
        )
        separator = b"\n" if before and not before.endswith(b"\n") else b""
        os.write(self._fd, separator + f"LOWROUTER_API_KEY={token}\n".encode("ascii"))
        os.fsync(self._fd)

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        os.close(self._fd)
        if error_type is not None and not self.existed:
            self.path.unlink(missing_ok=True)


def warn_about_env_file(ctx: Context, env_file: EnvFile) -> None:
    path = env_file.path
    if env_file.loose_mode is not None:
        mode = f"{env_file.loose_mode:o}"
        ctx.warn(f"{path} is readable by others (mode {mode}); run: chmod 600 {path}")
    if env_file.had_api_key:
        ctx.warn(f"{path} already set LOWROUTER_API_KEY; the new line was added after it")
    if in_git_work_tree(path) and not git_ignored(path):
        ctx.warn(
            f"{path} is inside a git work tree and not git-ignored: add it to .gitignore "
            "so the token is never committed"
        )


def _git(path: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """Run git beside `path`; None when git is missing or does not answer."""
    try:
        return subprocess.run(
            ["git", *args],
            cwd=path.resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def in_git_work_tree(path: Path) -> bool:
    result = _git(path, "rev-parse", "--is-inside-work-tree")
    return result is not None and result.returncode == 0 and result.stdout.strip() == "true"


def git_ignored(path: Path) -> bool:
    result = _git(path, "check-ignore", "-q", path.resolve().name)
    return result is not None and result.returncode == 0


# Commands: the gateway --------------------------------------------------------------------------


def serve(ctx: Context, args: argparse.Namespace) -> int:
    try:
        from infrastructure.server import serve as serve_gateway
    except ModuleNotFoundError as missing:
        if missing.name != "infrastructure.server":
            raise
        raise Refused("the gateway server is not built yet") from None
    return int(serve_gateway(ctx.settings, args.host, args.port, args.workers) or 0)


# The parser -------------------------------------------------------------------------------------

Handler = Callable[[Context, argparse.Namespace], int | None]  # None: 0, done


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}")
    return seconds


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

    credits = _group(subparsers, "credits", "fund accounts")
    add = _command(credits, "add", credits_add, "add credits to an account")
    add.add_argument("account", metavar="ACCOUNT", help="account id or name")
    add.add_argument("amount", metavar="AMOUNT", help="credits, e.g. 10 or 2.50")


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
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long the old key keeps working (default 0)",
    )


def _add_serve_command(subparsers: Any) -> None:
    parser = _command(subparsers, "serve", serve, "run the gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_positive_int, default=8080)
    parser.add_argument("--workers", type=_positive_int, default=1, metavar="N")


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
    return parser


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.format not in args.formats:
        offered = ", ".join(args.formats)
        raise UsageError(f"this command has no --format {args.format} (choose from {offered})")
    return args


# Entry point ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 refused, 2 usage error)."""
    try:
        args = parse_arguments(argv)
    except UsageError as error:
        return _fail(str(error), 2)
    except SystemExit as exit_request:  # --help
        return exit_request.code if isinstance(exit_request.code, int) else 0
    context = Context(args)
    try:
        return args.handler(context, args) or 0
    except (UsageError, SettingsError) as error:
        return _fail(str(error), 2)
    except (DomainError, Refused) as error:
        return _fail(str(error) or type(error).__name__, 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as error:  # one line, never a traceback
        return _fail(f"{type(error).__name__}: {error}", 1)
    finally:
        _close_quietly(context)


def _close_quietly(context: Context) -> None:
    try:
        context.close()
    except Exception as error:
        _fail(f"while closing the database: {type(error).__name__}: {error}", 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {one_line(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

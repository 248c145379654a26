"""The operator CLI, `lowrouter`: parse, call one application method, render.

Every command is one small function `(Context, Namespace)` that returns None (exit 0) or an exit
code, registered on the parser with `_command(...)`. Output is a table for people or, with
`--format json`, the API.md shapes for scripts. Tokens are printed once, on creation, to stdout
(or written to an `--env-file`), and never anywhere else: lists and views show `display`.

Exit codes:
  0  ok
  1  refused: the domain said no (unknown account or key, revoking a revoked key, a negative,
     zero-where-positive or non-numeric amount, a bad name or scope), or the command failed;
     or a check found something: `audit --verify-balances` a difference between the events and
     the read models, `verify` a tampered log, `investigate --revoke` several matching keys
  2  usage error: unknown command or option, a missing argument, a malformed key id (not a
     UUID), a --format the command does not offer, bad configuration (SettingsError)

Amounts are decimal strings checked by the domain (`parse_credits`), so a bad amount is a
refusal (1), exactly as the management API refuses it. Errors are one line on stderr, prefixed
`lowrouter: `, with any token-shaped text reduced to its display form.

The auditors' commands (`audit`, `verify`) read the event log itself; `investigate` and `usage`
read the read models (brought up to date first). A token given to `investigate` or `audit` (or
read from stdin with `-`) is hashed and looked up, never printed or stored.
"""

import argparse
import csv
import getpass
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import orjson
from sqlalchemy import select

from application.audit import (
    AccountHistory,
    Books,
    Difference,
    LedgerScan,
    account_history,
    is_key,
    key_history,
    scan_ledger,
    verify_books,
)
from domain.accounts import Account
from domain.actor import Actor
from domain.errors import DomainError, KeyRevoked, NotFound
from domain.keys import ApiKey
from domain.money import format_credits, parse_credits
from domain.scope import Scope
from domain.tokens import TokenFormatError, display_of, hash_token, parse_token
from infrastructure.runtime import Runtime, open_runtime
from infrastructure.settings import Settings, SettingsError, load_settings
from infrastructure.views import iso, key_event_json, key_json, key_state_json, usage_json
from projections import all_projections
from projections.chain import (
    ChainError,
    Checkpoint,
    VerifyReport,
    catch_up_chain,
    verify_against,
    write_checkpoint,
)
from projections.chain import verify as verify_chain
from projections.forensics import (
    ClientSeen,
    KeyInvestigation,
    KeyMatch,
    flags_for_keys,
    investigate_key,
    key_by_token_hash,
    keys_by_display,
    recorded_money,
    summarize_flags,
)
from projections.queries import last_used, usage_page
from projections.schema import accounts, from_us, positions, to_us

T = TypeVar("T")
PROG = "lowrouter"
TABLE_JSON = ("table", "json")
USAGE_FORMATS = ("table", "json", "csv")
ALL_FORMATS = ("table", "json", "csv", "jsonl")
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


# Times and signed amounts on the command line ---------------------------------------------------

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_SECONDS_PER = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str) -> datetime:
    """argparse type for times: ISO 8601 (without a zone it is UTC; a date alone is its
    midnight), or how long ago: `30m`, `2h`, `7d`, `1w`."""
    stripped = text.strip()
    ago = _AGO.fullmatch(stripped)
    if ago:
        seconds = float(ago.group(1)) * _SECONDS_PER[ago.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text[:40]!r} (ISO 8601 such as 2026-01-31T12:00:00Z, or an age "
            "such as 90m, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_signed_credits(text: str) -> int:
    """`-1.5` or `+2` or `2` credits, as signed micro-credits (never zero)."""
    stripped = text.strip()
    sign = -1 if stripped.startswith("-") else 1
    magnitude = parse_credits(stripped.removeprefix("-").removeprefix("+"), allow_zero=False)
    return sign * magnitude


def _us(moment: datetime | None) -> int | None:
    return to_us(moment) if moment is not None else None


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _actor_cell(actor: dict[str, Any] | None) -> str:
    if not actor:
        return "-"
    where = f" from {actor['address']}" if actor.get("address") else ""
    return f"{actor['kind']} {actor['name']}{where}"


def _detail_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            return str(len(value))
        return ",".join(str(v) for v in value) or "[]"
    if isinstance(value, dict):
        return str(len(value))
    return str(value)


def _details(event: dict[str, Any], leave_out: Iterable[str] = ()) -> str:
    """`name=prod models=a/b` from an event's fields (empty ones left out)."""
    skip = {"version", "type", "at", "actor", *leave_out}
    return " ".join(
        f"{name}={_detail_value(value)}"
        for name, value in event.items()
        if name not in skip and value is not None and value != [] and value != {}
    )


def section(ctx: Context, title: str, body: str) -> None:
    ctx.out()
    ctx.out(title)
    ctx.out(body)


# Commands: credits adjust and reconcile ---------------------------------------------------------


def credits_adjust(ctx: Context, args: argparse.Namespace) -> None:
    """A correction on today's ledger page (never an edit): positive credits back, negative
    charges more. It shows in `audit` and in the balance."""
    amount = parse_signed_credits(args.amount)
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must say why (it is kept in the ledger)")
    account = find_account(ctx, args.account)
    if args.key is not None:
        ctx.runtime.ledger.get_key(args.key, account.id)  # a key of this account, or NotFound
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
    ctx.out(render_record([*pairs, *_account_record(data)]))


def reconcile_command(ctx: Context, args: argparse.Namespace) -> None:
    """Settle holds older than the hold timeout at their held amount (what `serve` does every
    30 s), e.g. after every gateway was stopped."""
    settled = ctx.runtime.reconcile()
    timeout = ctx.settings.hold_timeout_seconds
    if ctx.format == "json":
        ctx.json({"settled": settled, "hold_timeout_seconds": timeout})
        return
    holds = "hold" if settled == 1 else "holds"
    ctx.out(f"settled {settled} {holds} older than {timeout:g} s at the held amount")


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
)
USAGE_TABLE = ("AT", "KEY", "MODEL", "TOKENS IN/OUT", "COST", "STATUS", "LATENCY", "CLIENT")


def usage_command(ctx: Context, args: argparse.Namespace) -> None:
    """The usage history, newest first: one row per completion, with the key's name then."""
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be before --until")
    ctx.runtime.projections.catch_up(["keys", "usage"])
    rows = usage_rows(ctx, args)
    if ctx.format == "json":
        ctx.json({"data": rows})
    elif ctx.format == "csv":
        writer = csv.DictWriter(ctx.stdout, fieldnames=USAGE_FIELDS)
        writer.writeheader()
        writer.writerows({k: _csv_value(row[k]) for k in USAGE_FIELDS} for row in rows)
    else:
        ctx.out(render_table(USAGE_TABLE, (_usage_row(row) for row in rows)))


def usage_rows(ctx: Context, args: argparse.Namespace) -> list[dict[str, Any]]:
    """USAGE rows (with account_id) of the accounts asked for, newest first, at most --limit."""
    found: list[tuple[int, dict[str, Any]]] = []
    for account_id in _usage_accounts(ctx, args):
        page = usage_page(
            ctx.runtime.engine,
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
        key = ctx.runtime.ledger.get_key(args.key)
        if account is not None and key.account_id != account.id:
            raise NotFound(f"no key {args.key} in account {account.name!r}")
        return [key.account_id]
    if account is not None:
        return [account.id]
    with ctx.runtime.engine.connect() as conn:
        return [UUID(row) for row in conn.execute(select(accounts.c.account_id)).scalars()]


def _usage_row(row: dict[str, Any]) -> list[str]:
    return [
        when(row["at"]),
        row["key_name"],
        row["model"],
        f"{row['prompt_tokens']}/{row['completion_tokens']}",
        row["cost"],
        row["status"],
        f"{row['latency_ms']} ms",
        row["client_ip"] or "-",
    ]


# Commands: projections --------------------------------------------------------------------------

PROJECTION_COLUMNS = ("NAME", "POSITION", "HEAD", "LAG", "LAST MOVED")


def projection_names() -> list[str]:
    return [projection.name for projection in all_projections()]


def projections_status(ctx: Context, args: argparse.Namespace) -> None:
    """Each read model's position in the event log, the log's head, and the lag between."""
    runtime = ctx.runtime
    statuses = runtime.projections.status()
    with runtime.engine.connect() as conn:
        moved = dict(conn.execute(select(positions.c.name, positions.c.updated_us)).all())
    data = [
        {
            "name": status.name,
            "position": status.position,
            "head": status.head,
            "lag": status.lag,
            "last_moved_at": iso(from_us(moved.get(status.name))),
        }
        for status in statuses
    ]
    if ctx.format == "json":
        ctx.json({"data": data})
        return
    rows = [
        [p["name"], str(p["position"]), str(p["head"]), str(p["lag"]), when(p["last_moved_at"])]
        for p in data
    ]
    ctx.out(render_table(PROJECTION_COLUMNS, rows))


@dataclass
class ProgressBar:
    """`keys [##########..........] 50% 1000/2000` on stderr: redrawn in place on a terminal,
    a line per tenth otherwise (so a log shows it too)."""

    stream: TextIO
    name: str
    width: int = 30
    _tenth: int = -1

    def update(self, _name: str, position: int, head: int) -> None:
        fraction = min(1.0, position / head) if head else 1.0
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.name} [{bar}] {fraction:4.0%} {position}/{head}"
        if self.stream.isatty():
            self.stream.write(f"\r{line}")
        elif int(fraction * 10) != self._tenth:
            self._tenth = int(fraction * 10)
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()


def projections_rebuild(ctx: Context, args: argparse.Namespace) -> None:
    """Drop read models and build them again from the log, while gateways keep running."""
    from projections.rebuild import rebuild

    runner = ctx.runtime.projections
    names = [args.name] if args.name else list(runner.projections)
    rebuilt = []
    for name in names:
        started = time.monotonic()
        bar = ProgressBar(ctx.stderr, name)
        bar.update(name, 0, runner.head())
        events = rebuild(runner, name, progress=bar.update)
        bar.finish()
        rebuilt.append(
            {
                "name": name,
                "events": events,
                "position": runner.position(name),
                "seconds": round(time.monotonic() - started, 3),
            }
        )
    if ctx.format == "json":
        ctx.json({"data": rebuilt})
        return
    rows = [
        [r["name"], str(r["events"]), str(r["position"]), f"{r['seconds']:.2f}"] for r in rebuilt
    ]
    ctx.out(render_table(("NAME", "EVENTS APPLIED", "POSITION", "SECONDS"), rows))


def projections_run(ctx: Context, args: argparse.Namespace) -> int | None:
    """Follow the log in the foreground until Ctrl-C (or SIGTERM); exit 1 if a projection fails."""
    runner = ctx.runtime.projections
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner.start()
    ctx.note("following the event log; Ctrl-C to stop")
    try:
        while not stop.wait(0.2):
            if runner.failure is not None:
                raise Refused(str(runner.failure))
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        signal.signal(signal.SIGTERM, previous)
    positions_now = ", ".join(f"{s.name} {s.position}" for s in runner.status())
    ctx.note(f"stopped at {positions_now}")
    return None


# Finding keys from what an auditor or responder was given ---------------------------------------


def read_token_from_stdin(ctx: Context) -> str:
    """`-` as the argument: the token comes from stdin, so it is not in the shell's history."""
    line = sys.stdin.readline().strip()
    if not line:
        raise UsageError("expected a token on stdin (for '-')")
    return line


def find_keys(ctx: Context, given: str) -> list[KeyMatch]:
    """The keys a token, a display (`lr-sk-AbCd…wXyZ`) or a key id names. A token is hashed
    and looked up; it is never printed or stored."""
    engine = ctx.runtime.engine
    text = read_token_from_stdin(ctx) if given == "-" else given.strip()
    display = re.fullmatch(r"(lr-(?:sk|mk)-[0-9A-Za-z]{4})(?:…|\.\.\.)([0-9A-Za-z]{4})", text)
    if display:
        prefix, last4 = display.groups()
        matches = keys_by_display(engine, prefix, last4)
        if not matches:
            raise NotFound(f"no key is shown as {prefix}…{last4}")
        return matches
    if text.startswith(("lr-sk-", "lr-mk-")):
        try:
            token = parse_token(text)
        except TokenFormatError as error:
            raise UsageError(f"not a whole token or display ({error})") from None
        match = key_by_token_hash(engine, hash_token(ctx.settings.pepper, token))
        if match is None:
            raise NotFound(f"no key has the token {token.display}: this gateway never issued it")
        return [match]
    try:
        key_id = UUID(text)
    except ValueError:
        raise UsageError(
            f"not a token, a display (lr-sk-AbCd…wXyZ) or a key id: {text[:40]!r}"
        ) from None
    return _matches_of_id(ctx, key_id)


def _matches_of_id(ctx: Context, key_id: UUID) -> list[KeyMatch]:
    key = ctx.runtime.ledger.get_key(key_id)
    return [
        KeyMatch(
            str(key.id),
            str(key.account_id),
            "sk",
            key.name,
            key.display,
            key.status_at(ctx.now()),
            key.created_on,
        )
    ]


MATCH_COLUMNS = ("ID", "KIND", "NAME", "DISPLAY", "STATUS", "ACCOUNT", "CREATED")


def show_matches(ctx: Context, given: str, matches: list[KeyMatch]) -> None:
    names = _account_names(ctx)
    data = [
        {
            "id": m.key_id,
            "kind": "inference" if m.kind == "sk" else "management",
            "name": m.name,
            "display": m.display,
            "status": m.status,
            "account_id": m.account_id,
            "account_name": names.get(m.account_id),
            "created_at": iso(m.created),
        }
        for m in matches
    ]
    if ctx.format in ("json", "jsonl"):
        ctx.json({"matches": data})
    else:
        ctx.out(render_table(MATCH_COLUMNS, (_match_row(d) for d in data)))
    ctx.note(f"{len(matches)} keys match {redact_tokens(given)}; give one of their ids")


def _match_row(match: dict[str, Any]) -> list[str]:
    return [
        match["id"],
        match["kind"],
        match["name"],
        match["display"],
        match["status"],
        match["account_name"] or "-",
        when(match["created_at"]),
    ]


def _account_names(ctx: Context) -> dict[str, str]:
    with ctx.runtime.engine.connect() as conn:
        return dict(conn.execute(select(accounts.c.account_id, accounts.c.name)).all())


def _one_key(ctx: Context, given: str) -> KeyMatch | None:
    """The one key named, or None after listing several matches."""
    matches = find_keys(ctx, given)
    if len(matches) > 1:
        show_matches(ctx, given, matches)
        return None
    return matches[0]


# Commands: audit --------------------------------------------------------------------------------

AUDIT_FORMATS = ("table", "json", "jsonl")
EVENT_COLUMNS = ("VERSION", "TYPE", "AT", "ACTOR", "DETAILS")


def audit(ctx: Context, args: argparse.Namespace) -> int | None:
    """Replay a key's or an account's events, and the state they produced at --as-of."""
    if args.verify_balances:
        if args.target is not None or args.as_of is not None:
            raise UsageError("--verify-balances checks every account: give no target or --as-of")
        return verify_balances(ctx)
    if args.target is None:
        raise UsageError("give a key id, an account (id or name), or --verify-balances")
    target = args.target
    if target.startswith(("lr-sk-", "lr-mk-")) or target == "-":
        ctx.runtime.projections.catch_up(["keys"])
        match = _one_key(ctx, target)
        if match is None:
            return 1
        if match.kind == "mk":
            return audit_account(ctx, UUID(match.account_id), args.as_of)
        return audit_key(ctx, UUID(match.key_id), args.as_of)
    try:
        aggregate_id = UUID(target)
    except ValueError:
        return audit_account(ctx, find_account(ctx, target).id, args.as_of)
    if is_key(ctx.runtime.ledger, aggregate_id):
        return audit_key(ctx, aggregate_id, args.as_of)
    try:
        account = ctx.runtime.ledger.get_account(aggregate_id)
    except NotFound:
        raise NotFound(f"no key or account {aggregate_id}") from None
    return audit_account(ctx, account.id, args.as_of)


def audit_key(ctx: Context, key_id: UUID, as_of: datetime | None) -> None:
    """A key's events up to `as_of` (default now) and the KEY they made (no spend or last use:
    those are not in a key's events)."""
    history = key_history(ctx.runtime.ledger, key_id, as_of)
    moment = as_of or ctx.now()
    events = [key_event_json(event) for event in history.events]
    state = key_state_json(history.state, moment)
    if ctx.format == "jsonl":
        _jsonl(ctx, "key", key_id, events)
        ctx.out(orjson.dumps({"state": state, "as_of": iso(moment)}).decode())
    elif ctx.format == "json":
        audited = {"kind": "key", "id": str(key_id), "as_of": iso(moment), "data": events}
        ctx.json({**audited, "state": state})
    else:
        ctx.out(render_record([("key", str(key_id)), ("as of", iso(moment) or "")]))
        section(ctx, "EVENTS", _events_table(events))
        section(ctx, f"STATE AT {when(iso(moment))}", _state_record(state))


def _state_record(state: dict[str, Any] | None) -> str:
    if state is None:
        return "the key did not exist yet"
    not_in_events = ("spent today", "last used")
    return render_record([pair for pair in _key_record(state) if pair[0] not in not_in_events])


def _jsonl(ctx: Context, stream: str, stream_id: UUID, events: list[dict[str, Any]]) -> None:
    for event in events:
        ctx.out(orjson.dumps({"stream": stream, "stream_id": str(stream_id), **event}).decode())


def _events_table(events: list[dict[str, Any]], leave_out: Iterable[str] = ()) -> str:
    rows = [
        [
            str(e["version"]),
            e["type"],
            when(e["at"]),
            _actor_cell(e.get("actor")),
            _details(e, leave_out),
        ]
        for e in events
    ]
    return render_table(EVENT_COLUMNS, rows) if rows else "(none)"


def ledger_event_json(event: Any) -> dict[str, Any]:
    """A ledger page's event: as a key's, with carried holds' amounts as money too."""
    data = key_event_json(event)
    if "carried_holds" in data:
        data["carried_holds"] = [
            {"request_id": request_id, **hold, "amount": format_credits(hold["amount"])}
            for request_id, hold in data["carried_holds"].items()
        ]
    return data


def audit_account(ctx: Context, account_id: UUID, as_of: datetime | None) -> int | None:
    history = account_history(ctx.runtime.ledger, account_id, as_of)
    moment = as_of or ctx.now()
    events = [key_event_json(event) for event in history.events]
    pages = [
        {
            "day": page.day,
            "page_id": str(page.page_id),
            "events": [ledger_event_json(e) for e in page.events],
        }
        for page in history.pages
    ]
    books = _books_json(ctx, history.books)
    if ctx.format == "jsonl":
        _jsonl(ctx, "account", account_id, events)
        for page in history.pages:
            _jsonl(ctx, "ledger_page", page.page_id, [ledger_event_json(e) for e in page.events])
        ctx.out(orjson.dumps({"books": books, "as_of": iso(moment)}).decode())
    elif ctx.format == "json":
        ctx.json(
            {
                "kind": "account",
                "id": str(account_id),
                "name": history.name,
                "as_of": iso(moment),
                "data": events,
                "pages": pages,
                "books": books,
            }
        )
    else:
        _account_audit_table(ctx, history, moment, events, pages, books)
    return 1 if history.books.problems else None


def _books_json(ctx: Context, books: Books) -> dict[str, Any]:
    names = _key_names(ctx, {key_id for key_id, _ in books.spend})
    return {
        "opening": format_credits(books.opening),
        "funded": format_credits(books.funded),
        "settled": format_credits(books.settled),
        "adjusted": format_credits(books.adjusted),
        "balance": format_credits(books.balance),
        "held": format_credits(books.held),
        "open_holds": len(books.open_holds),
        "spend": [
            {
                "day": day,
                "key_id": key_id,
                "key_name": names.get(key_id),
                "cost": format_credits(spent.cost),
                "requests": spent.requests,
            }
            for (key_id, day), spent in sorted(
                books.spend.items(), key=lambda i: (i[0][1], i[0][0])
            )
        ],
        "problems": books.problems,
    }


def _key_names(ctx: Context, key_ids: Iterable[str]) -> dict[str, str]:
    names = {}
    for key_id in key_ids:
        try:
            names[key_id] = ctx.runtime.ledger.get_key(UUID(key_id)).name
        except (NotFound, ValueError):
            continue
    return names


def _account_audit_table(
    ctx: Context,
    history: AccountHistory,
    moment: datetime,
    events: list[dict[str, Any]],
    pages: list[dict[str, Any]],
    books: dict[str, Any],
) -> None:
    ctx.out(
        render_record(
            [
                ("account", f"{history.account_id} ({history.name})"),
                ("as of", iso(moment) or ""),
            ]
        )
    )
    section(ctx, "ACCOUNT EVENTS", _events_table(events))
    for page in pages:
        title = f"LEDGER PAGE {page['day']} ({page['page_id']})"
        section(ctx, title, _events_table(page["events"], leave_out=("account_id",)))
    figures = ("opening", "funded", "settled", "adjusted", "balance", "held")
    record = [(name, books[name]) for name in figures] + [("open holds", str(books["open_holds"]))]
    section(ctx, "BOOKS (recomputed from the events)", render_record(record))
    spend_rows = [
        [s["day"], s["key_name"] or "-", s["key_id"], str(s["requests"]), s["cost"]]
        for s in books["spend"]
    ]
    spend = render_table(("DAY", "KEY", "KEY ID", "REQUESTS", "COST"), spend_rows)
    section(ctx, "SPEND PER KEY PER DAY", spend if spend_rows else "(none)")
    if books["problems"]:
        section(ctx, "PROBLEMS IN THE LOG", "\n".join(books["problems"]))


# --verify-balances ------------------------------------------------------------------------------

DIFFERENCE_COLUMNS = ("WHAT", "ACCOUNT", "KEY", "DAY", "FROM THE EVENTS", "RECORDED")


def verify_balances(ctx: Context) -> int | None:
    """Recompute every account's balance and every key's daily spend from the events, and
    compare them with the read models (lr_daily_spend, lr_usage, lr_holds) and the ledger pages
    as loaded (snapshots). Exit 1 when anything differs."""
    runtime = ctx.runtime
    runtime.projections.catch_up(["usage"])
    recorded = recorded_money(runtime.engine)
    scan = scan_ledger(runtime.ledger, recorded.position)
    differences = verify_books(runtime.ledger, scan, recorded.figures)
    problems = [*scan.problems, *(p for books in scan.books.values() for p in books.problems)]
    summary = [_account_summary(scan, account_id, differences) for account_id in scan.books]
    summary.sort(key=lambda a: (a["name"] or "", a["id"]))
    if ctx.format in ("json", "jsonl"):
        ctx.json(
            {
                "position": scan.position,
                "accounts": summary,
                "differences": [asdict(d) for d in differences],
                "problems": problems,
            }
        )
    else:
        _verify_table(ctx, scan.position, summary, differences, problems)
    if differences or problems:
        ctx.note(f"{len(differences) + len(problems)} differences between the events and the rest")
        return 1
    return None


def _account_summary(
    scan: LedgerScan, account_id: UUID, differences: list[Difference]
) -> dict[str, Any]:
    books = scan.books[account_id]
    return {
        "id": str(account_id),
        "name": scan.names.get(account_id),
        "balance": format_credits(books.balance),
        "held": format_credits(books.held),
        "key_days": len(books.spend),
        "differences": sum(1 for d in differences if d.account_id == str(account_id)),
    }


def _verify_table(
    ctx: Context,
    position: int,
    summary: list[dict[str, Any]],
    differences: list[Difference],
    problems: list[str],
) -> None:
    rows = [
        [
            a["id"],
            a["name"] or "-",
            a["balance"],
            a["held"],
            str(a["key_days"]),
            f"{a['differences']} differences" if a["differences"] else "ok",
        ]
        for a in summary
    ]
    ctx.out(render_table(("ACCOUNT", "NAME", "BALANCE", "HELD", "KEY-DAYS", "CHECK"), rows))
    ctx.out()
    ctx.out(f"recomputed from the events up to position {position}")
    if differences:
        diff_rows = [
            [d.what, d.account_id, d.key_id or "-", d.day or "-", d.from_events, d.recorded]
            for d in differences
        ]
        section(ctx, "DIFFERENCES", render_table(DIFFERENCE_COLUMNS, diff_rows))
    if problems:
        section(ctx, "PROBLEMS IN THE LOG", "\n".join(problems))
    if not differences and not problems:
        ctx.out("every balance, daily spend and open hold agrees with the events")


# Commands: investigate --------------------------------------------------------------------------


def investigate(ctx: Context, args: argparse.Namespace) -> int | None:
    """From a pasted token, a display or a key id to one report (and, with --revoke, a revoked
    key): lifecycle, uses by address and agent, models, spend per hour since the leak, attempts
    after revocation, unexpected-usage flags."""
    runtime = ctx.runtime
    runtime.projections.catch_up()
    match = _one_key(ctx, args.target)
    if match is None:
        if args.revoke:
            ctx.note("nothing was revoked: several keys match")
        return 1 if args.revoke else None
    if match.kind == "mk":
        raise Refused(
            f"{match.display} is a management key of account {match.account_id}; "
            "investigate covers inference keys (lr-sk-…)"
        )
    key_id = UUID(match.key_id)
    revoked_now = args.revoke and revoke_for_leak(ctx, key_id)
    runtime.projections.catch_up()
    report = investigate_key(runtime.ledger, runtime.engine, key_id, args.since, ctx.now())
    data = investigation_json(ctx, report, revoked_now)
    if ctx.format == "json":
        ctx.json(data)
    else:
        investigation_table(ctx, data)
    return None


def revoke_for_leak(ctx: Context, key_id: UUID) -> bool:
    """Revoke with reason "leak"; False when the key had already stopped working."""
    try:
        ctx.runtime.ledger.revoke_key(key_id, ctx.actor, reason="leak")
    except KeyRevoked:
        ctx.note("the key had already stopped working; nothing to revoke")
        return False
    return True


def investigation_json(ctx: Context, report: KeyInvestigation, revoked_now: bool) -> dict[str, Any]:
    key = report.key
    names = _account_names(ctx)
    view = key_view(ctx, key)
    return {
        "key": view,
        "account": {"id": str(key.account_id), "name": names.get(str(key.account_id))},
        "revoked_now": revoked_now,
        "since": iso(report.since),
        "until": iso(report.until),
        "lifecycle": [key_event_json(event) for event in report.history.lifecycle],
        "first_used_at": iso(report.first_used),
        "last_used_at": iso(report.last_used),
        "clients": [_client_json(report, client) for client in report.clients],
        "models": [
            {
                "model": m.model,
                "requests": m.requests,
                "cost": format_credits(m.cost),
                "first_used_at": iso(m.first_used),
                "last_used_at": iso(m.last_used),
            }
            for m in report.models
        ],
        "spend_per_hour": [
            {"hour": iso(h.hour), "requests": h.requests, "cost": format_credits(h.cost)}
            for h in report.hours
        ],
        "spend_in_window": {
            "requests": report.window_requests,
            "cost": format_credits(report.window_cost),
        },
        "attempts_after_revocation": {
            "count": report.attempts_after_revocation,
            "attempts": [
                {
                    "at": iso(e.timestamp),
                    "count": e.count,
                    "client_ip": e.client_ip,
                    "user_agent": e.user_agent,
                }
                for e in report.history.attempts_after_revocation
            ],
        },
        "flags": [flag.as_json() for flag in report.flags],
    }


def _client_json(report: KeyInvestigation, client: ClientSeen) -> dict[str, Any]:
    return {
        "client_ip": client.client_ip,
        "user_agent": client.user_agent,
        "first_seen_at": iso(client.first_seen),
        "last_seen_at": iso(client.last_seen),
        "requests": client.requests,
        "cost": format_credits(client.cost),
        "new_since": report.new_since(client),
    }


def investigation_table(ctx: Context, data: dict[str, Any]) -> None:
    key, account = data["key"], data["account"]
    revoked = " (revoked just now, reason: leak)" if data["revoked_now"] else ""
    window = f"{when(data['since'], 'first use')} to {when(data['until'])}"
    ctx.out(
        render_record(
            [
                ("key", f"{key['display']}  {key['id']}"),
                ("name", key["name"]),
                ("account", f"{account['name'] or '-'}  {account['id']}"),
                ("status", key["status"] + revoked),
                ("created", when(key["created_at"])),
                ("revoked", when(key["revoked_at"])),
                ("first use", when(data["first_used_at"], "never")),
                ("last use", when(data["last_used_at"], "never")),
                ("window", window),
            ]
        )
    )
    section(ctx, "LIFECYCLE", _events_table(data["lifecycle"], leave_out=("account_id",)))
    section(ctx, "USES BY CLIENT ADDRESS AND USER AGENT", _clients_table(data))
    section(ctx, "MODELS USED", _models_table(data["models"]))
    spend = data["spend_in_window"]
    title = f"SPEND PER HOUR, {window}: {spend['cost']} in {spend['requests']} requests"
    hours = [[when(h["hour"]), str(h["requests"]), h["cost"]] for h in data["spend_per_hour"]]
    section(ctx, title, render_table(("HOUR", "REQUESTS", "COST"), hours) if hours else "(none)")
    attempts = data["attempts_after_revocation"]
    section(ctx, f"ATTEMPTS AFTER REVOCATION: {attempts['count']}", _attempts_table(attempts))
    flags = [[when(f["at"]), f["kind"], f["description"]] for f in data["flags"]]
    section(
        ctx, "UNEXPECTED USAGE", render_table(("AT", "FLAG", "WHAT"), flags) if flags else "(none)"
    )


def _clients_table(data: dict[str, Any]) -> str:
    since = data["since"]
    rows = [
        [
            c["client_ip"] or "(unknown)",
            c["user_agent"] or "(unknown)",
            when(c["first_seen_at"]),
            when(c["last_seen_at"]),
            str(c["requests"]),
            c["cost"],
            "NEW since " + when(since) if c["new_since"] else "",
        ]
        for c in data["clients"]
    ]
    columns = ("ADDRESS", "USER AGENT", "FIRST SEEN", "LAST SEEN", "REQUESTS", "COST", "")
    return render_table(columns, rows) if rows else "(none)"


def _models_table(models: list[dict[str, Any]]) -> str:
    rows = [
        [
            m["model"],
            str(m["requests"]),
            m["cost"],
            when(m["first_used_at"]),
            when(m["last_used_at"]),
        ]
        for m in models
    ]
    columns = ("MODEL", "REQUESTS", "COST", "FIRST USED", "LAST USED")
    return render_table(columns, rows) if rows else "(none)"


def _attempts_table(attempts: dict[str, Any]) -> str:
    rows = [
        [when(a["at"]), str(a["count"]), a["client_ip"] or "(unknown)", a["user_agent"] or "-"]
        for a in attempts["attempts"]
    ]
    columns = ("AT", "ATTEMPTS", "LATEST ADDRESS", "USER AGENT")
    return render_table(columns, rows) if rows else "(none)"


# Commands: verify (tamper evidence) -------------------------------------------------------------


def verify_command(ctx: Context, args: argparse.Namespace) -> int | None:
    """Check the event log against its hash chain (projections.chain): name the first position
    where an event was altered, removed, reordered or inserted. With --against, prove the log up
    to a checkpoint kept outside the database is unchanged; with --checkpoint, write one."""
    runtime = ctx.runtime
    try:
        if args.against is not None:
            report = verify_against(runtime, args.against)
        else:
            catch_up_chain(runtime)
            report = verify_chain(runtime)
        checkpoint = None
        if report.ok and args.checkpoint is not None:
            checkpoint = write_checkpoint(runtime, args.checkpoint)
    except ChainError as error:
        raise Refused(str(error)) from None
    _show_verification(ctx, report, checkpoint, args.checkpoint)
    if not report.ok:
        if args.checkpoint is not None:
            ctx.note("no checkpoint was written: the log fails verification")
        return 1
    return None


def _show_verification(
    ctx: Context, report: VerifyReport, checkpoint: Checkpoint | None, path: str | None
) -> None:
    written = {**checkpoint.to_json(), "path": str(Path(path).resolve())} if checkpoint else None
    if ctx.format == "json":
        ctx.json(
            {
                "ok": report.ok,
                "kind": report.kind,
                "position": report.position,
                "message": report.message,
                "checked": report.checked,
                "through": report.chained,
                "checkpoint": written,
            }
        )
        return
    pairs = [
        ("result", report.kind),
        ("first difference", str(report.position) if report.position is not None else "-"),
        ("events checked", str(report.checked)),
        ("through position", str(report.chained)),
        ("", report.message),
    ]
    if written is not None:
        pairs += [
            ("checkpoint", written["path"]),
            ("checkpoint digest", f"{written['digest']} at position {written['position']}"),
        ]
    ctx.out(render_record(pairs))
    if written is not None:
        ctx.note(
            "keep the checkpoint outside the database; 'lowrouter verify --against FILE' "
            "proves the log up to it is unchanged"
        )


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
    usage.add_argument("--limit", metavar="N", type=_positive_int, default=100, help="default 100")


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
    _command(projections, "run", projections_run, "follow the log in the foreground (Ctrl-C stops)")


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

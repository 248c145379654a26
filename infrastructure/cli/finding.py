"""Finding keys from what an auditor or responder was given: a token, a display or a key id."""

import re
import sys
from typing import Any
from uuid import UUID

from domain.errors import NotFound
from domain.tokens import TokenFormatError, TokenKind, hash_token, parse_token
from infrastructure.cli.context import Context
from infrastructure.cli.errors import UsageError, redact_tokens
from infrastructure.cli.output import render_table, when
from infrastructure.views import iso
from projections.queries.forensics import KeyMatch, match_of_token_hash, matches_of_display
from projections.queries.management import names_of_accounts

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
    reads = ctx.runtime.reads
    text = read_token_from_stdin(ctx) if given == "-" else given.strip()
    display = re.fullmatch(r"(lr-(?:sk|mk)-[0-9A-Za-z]{4})(?:…|\.\.\.)([0-9A-Za-z]{4})", text)
    if display:
        prefix, last4 = display.groups()
        matches = reads.ask(matches_of_display, prefix, last4)
        if not matches:
            raise NotFound(f"no key is shown as {prefix}…{last4}")
        return matches
    if text.startswith(("lr-sk-", "lr-mk-")):
        try:
            token = parse_token(text)
        except TokenFormatError as error:
            raise UsageError(f"not a whole token or display ({error})") from None
        match = reads.ask(match_of_token_hash, hash_token(ctx.settings.pepper, token))
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
    key = ctx.runtime.app.get_key(key_id)
    return [
        KeyMatch(
            str(key.id),
            str(key.account_id),
            TokenKind.INFERENCE,
            key.name,
            key.display,
            key.status_at(ctx.now()),
            key.created_on,
        )
    ]


MATCH_COLUMNS = ("ID", "KIND", "NAME", "DISPLAY", "STATUS", "ACCOUNT", "CREATED")


def show_matches(ctx: Context, given: str, matches: list[KeyMatch]) -> None:
    names = account_names(ctx)
    data = [
        {
            "id": m.key_id,
            "kind": "inference" if m.kind is TokenKind.INFERENCE else "management",
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


def account_names(ctx: Context) -> dict[str, str]:
    return ctx.runtime.reads.ask(names_of_accounts)


def one_key(ctx: Context, given: str) -> KeyMatch | None:
    """The one key named, or None after listing several matches."""
    matches = find_keys(ctx, given)
    if len(matches) > 1:
        show_matches(ctx, given, matches)
        return None
    return matches[0]

"""Commands: audit, a key's or an account's events replayed, and `audit --verify-balances`."""

import argparse
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from application.audit import (
    AccountHistory,
    Books,
    Difference,
    account_history,
    is_key,
    key_history,
)
from application.verification import AccountCheck
from application.verification import verify_balances as check_balances
from domain.errors import NotFound
from domain.money import format_credits
from domain.tokens import TokenKind
from infrastructure.cli.context import Context
from infrastructure.cli.errors import UsageError
from infrastructure.cli.finding import one_key
from infrastructure.cli.output import events_table, render_record, render_table, section, when
from infrastructure.cli.shapes import find_account, key_record
from infrastructure.views import iso, key_event_json, key_state_json
from projections.queries.forensics import recorded_money

# Commands: audit --------------------------------------------------------------------------------

AUDIT_FORMATS = ("table", "json", "jsonl")


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
        match = one_key(ctx, target)
        if match is None:
            return 1
        if match.kind is TokenKind.MANAGEMENT:
            return audit_account(ctx, UUID(match.account_id), args.as_of)
        audit_key(ctx, UUID(match.key_id), args.as_of)
        return None
    try:
        aggregate_id = UUID(target)
    except ValueError:
        return audit_account(ctx, find_account(ctx, target).id, args.as_of)
    if is_key(ctx.runtime.app, aggregate_id):
        audit_key(ctx, aggregate_id, args.as_of)
        return None
    try:
        account = ctx.runtime.app.get_account(aggregate_id)
    except NotFound:
        raise NotFound(f"no key or account {aggregate_id}") from None
    return audit_account(ctx, account.id, args.as_of)


def audit_key(ctx: Context, key_id: UUID, as_of: datetime | None) -> None:
    """A key's events up to `as_of` (default now) and the KEY they made (no spend or last use:
    those are not in a key's events)."""
    history = key_history(ctx.runtime.app, key_id, as_of)
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
        section(ctx, "EVENTS", events_table(events))
        section(ctx, f"STATE AT {when(iso(moment))}", _state_record(state))


def _state_record(state: dict[str, Any] | None) -> str:
    if state is None:
        return "the key did not exist yet"
    not_in_events = ("spent today", "last used")
    return render_record([pair for pair in key_record(state) if pair[0] not in not_in_events])


def _jsonl(ctx: Context, stream: str, stream_id: UUID, events: list[dict[str, Any]]) -> None:
    for event in events:
        ctx.out(orjson.dumps({"stream": stream, "stream_id": str(stream_id), **event}).decode())


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
    history = account_history(ctx.runtime.app, account_id, as_of)
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
            names[key_id] = ctx.runtime.app.get_key(UUID(key_id)).name
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
    section(ctx, "ACCOUNT EVENTS", events_table(events))
    for page in pages:
        title = f"LEDGER PAGE {page['day']} ({page['page_id']})"
        section(ctx, title, events_table(page["events"], leave_out=("account_id",)))
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
    check = check_balances(runtime.app, lambda: runtime.reads.ask(recorded_money))
    summary = [_account_summary(account) for account in check.accounts]
    if ctx.format in ("json", "jsonl"):
        ctx.json(
            {
                "position": check.position,
                "accounts": summary,
                "differences": [asdict(d) for d in check.differences],
                "problems": check.problems,
            }
        )
    else:
        _verify_table(ctx, check.position, summary, check.differences, check.problems)
    if not check.ok:
        count = len(check.differences) + len(check.problems)
        ctx.note(f"{count} differences between the events and the rest")
        return 1
    return None


def _account_summary(account: AccountCheck) -> dict[str, Any]:
    return {
        "id": str(account.account_id),
        "name": account.name,
        "balance": format_credits(account.balance),
        "held": format_credits(account.held),
        "key_days": account.key_days,
        "differences": account.differences,
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

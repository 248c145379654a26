"""Commands: investigate, a leaked key's report (and, with --revoke, a revoked key)."""

import argparse
from typing import Any
from uuid import UUID

from application import management_keys
from application.investigation import ClientSeen, KeyInvestigation
from domain.errors import DomainError, KeyRevoked
from domain.money import format_credits
from domain.tokens import TokenKind
from infrastructure.cli.context import Context
from infrastructure.cli.finding import account_names, one_key
from infrastructure.cli.output import events_table, render_record, render_table, section, when
from infrastructure.cli.shapes import key_view
from infrastructure.views import iso, key_event_json, management_key_json
from projections.queries.forensics import KeyMatch, investigate_key

# Commands: investigate --------------------------------------------------------------------------


def investigate(ctx: Context, args: argparse.Namespace) -> int | None:
    """From a pasted token, a display or a key id to one report (and, with --revoke, a revoked
    key): lifecycle, uses by address and agent, models, spend per hour since the leak, attempts
    after revocation, unexpected-usage flags."""
    runtime = ctx.runtime
    match = one_key(ctx, args.target)
    if match is None:
        if args.revoke:
            ctx.note("nothing was revoked: several keys match")
        return 1 if args.revoke else None
    if match.kind is TokenKind.MANAGEMENT:
        investigate_management_key(ctx, args, match)
        return None
    key_id = UUID(match.key_id)
    revoked_now = args.revoke and revoke_for_leak(ctx, key_id)
    report = runtime.reads.ask(investigate_key, runtime.app, key_id, args.since, ctx.now())
    data = investigation_json(ctx, report, revoked_now)
    if ctx.format == "json":
        ctx.json(data)
    else:
        investigation_table(ctx, data)
    return None


def investigate_management_key(ctx: Context, args: argparse.Namespace, match: KeyMatch) -> None:
    """A management key's report: its lifecycle and every change made with it (when, from
    which address, to what); with --revoke, it is revoked first."""
    app, account_id, key_id = ctx.runtime.app, UUID(match.account_id), UUID(match.key_id)
    revoked_now = False
    if args.revoke:
        try:
            management_keys.revoke_management_key(app, account_id, key_id, ctx.actor)
            revoked_now = True
        except DomainError:
            ctx.note("the key had already stopped working; nothing to revoke")
    report = management_keys.investigate_management_key(app, account_id, key_id)
    names = account_names(ctx)
    data: dict[str, Any] = {
        "key": {**management_key_json(report.key), "kind": "management"},
        "account": {"id": match.account_id, "name": names.get(match.account_id)},
        "revoked_now": revoked_now,
        "lifecycle": [key_event_json(event) for event in report.lifecycle],
        "actions": [
            {**key_event_json(event), "stream": str(event.originator_id)}
            for event in report.actions
        ],
    }
    if ctx.format == "json":
        ctx.json(data)
        return
    key, account = data["key"], data["account"]
    revoked = " (revoked just now)" if revoked_now else ""
    ctx.out(
        render_record(
            [
                ("management key", f"{key['display']}  {key['id']}"),
                ("name", key["name"]),
                ("account", f"{account['name'] or '-'}  {account['id']}"),
                ("status", key["status"] + revoked),
                ("created", when(key["created_at"])),
                ("revoked", when(key["revoked_at"])),
            ]
        )
    )
    section(ctx, "LIFECYCLE", events_table(data["lifecycle"]))
    section(ctx, f"CHANGES MADE WITH IT: {len(data['actions'])}", events_table(data["actions"]))


def revoke_for_leak(ctx: Context, key_id: UUID) -> bool:
    """Revoke with reason "leak"; False when the key had already stopped working."""
    try:
        ctx.runtime.app.revoke_key(key_id, ctx.actor, reason="leak")
    except KeyRevoked:
        ctx.note("the key had already stopped working; nothing to revoke")
        return False
    return True


def investigation_json(ctx: Context, report: KeyInvestigation, revoked_now: bool) -> dict[str, Any]:
    key = report.key
    names = account_names(ctx)
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
                "apis": list(m.apis),
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
    section(ctx, "LIFECYCLE", events_table(data["lifecycle"], leave_out=("account_id",)))
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
            ", ".join(m["apis"]),
            str(m["requests"]),
            m["cost"],
            when(m["first_used_at"]),
            when(m["last_used_at"]),
        ]
        for m in models
    ]
    columns = ("MODEL", "APIS", "REQUESTS", "COST", "FIRST USED", "LAST USED")
    return render_table(columns, rows) if rows else "(none)"


def _attempts_table(attempts: dict[str, Any]) -> str:
    rows = [
        [when(a["at"]), str(a["count"]), a["client_ip"] or "(unknown)", a["user_agent"] or "-"]
        for a in attempts["attempts"]
    ]
    columns = ("AT", "ATTEMPTS", "LATEST ADDRESS", "USER AGENT")
    return render_table(columns, rows) if rows else "(none)"

"""Commands: webhooks add, list, remove, deliveries (an account's webhook endpoints)."""

import argparse
from uuid import UUID

from infrastructure.cli.context import Context
from infrastructure.cli.errors import UsageError
from infrastructure.cli.output import render_record, render_table, when
from infrastructure.cli.shapes import find_account
from infrastructure.webhook_views import delivery_json, webhook_json
from projections.queries.management import deliveries_of_webhook, webhooks_of_account


def webhooks_add(ctx: Context, args: argparse.Namespace) -> None:
    """Subscribe a URL; prints the signing secret once."""
    account = find_account(ctx, args.account)
    added = ctx.runtime.webhooks.add(account.id, args.url, args.event, ctx.actor)
    view = webhook_json(added.endpoint)
    if ctx.format == "json":
        ctx.json({"secret": added.secret, "data": view})
        return
    ctx.out(
        render_record(
            [
                ("id", view["id"]),
                ("url", view["url"]),
                ("events", ", ".join(view["events"])),
                ("secret", added.secret),
            ]
        )
    )
    ctx.note("the secret is shown only now: give it to the receiver to verify signatures")


def webhooks_list(ctx: Context, args: argparse.Namespace) -> None:
    account = find_account(ctx, args.account)
    views = [webhook_json(v) for v in ctx.runtime.reads.ask(webhooks_of_account, account.id)]
    if ctx.format == "json":
        ctx.json({"data": views})
        return
    rows = [[v["id"], v["url"], ", ".join(v["events"]), when(v["created_at"])] for v in views]
    ctx.out(render_table(["id", "url", "events", "created"], rows))


def webhooks_remove(ctx: Context, args: argparse.Namespace) -> None:
    removed = ctx.runtime.webhooks.remove(_endpoint_id(args.id), ctx.actor)
    view = webhook_json(removed)
    if ctx.format == "json":
        ctx.json(view)
    else:
        ctx.out(f"removed webhook {view['id']} ({view['url']})")


def webhooks_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    endpoint = ctx.runtime.webhooks.get(_endpoint_id(args.id))
    rows = [delivery_json(r) for r in ctx.runtime.reads.ask(deliveries_of_webhook, endpoint.id)]
    if ctx.format == "json":
        ctx.json({"data": rows})
        return
    table = [
        [
            r["event_id"],
            r["type"],
            str(r["attempt"]),
            str(r["status_code"] or r["error"] or "-"),
            when(r["attempted_at"]),
            when(r["delivered_at"]),
            when(r["next_attempt_at"]),
        ]
        for r in rows
    ]
    headers = ["webhook-id", "type", "attempt", "status", "attempted", "delivered", "next"]
    ctx.out(render_table(headers, table))


def _endpoint_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise UsageError(f"{text[:40]!r} is not a webhook id") from None

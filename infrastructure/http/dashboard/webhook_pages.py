"""The Webhooks page: the account's endpoints, subscribing one (its secret shown once), removing
one, and each endpoint's deliveries. Self-contained: its own templates (webhooks*.html)."""

from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from application.webhooks import Webhooks
from domain.webhooks import EVENT_TYPES, InvalidWebhook
from infrastructure.error_table import WEBHOOK
from infrastructure.http.dashboard.rendering import (
    Refusal,
    call,
    never_cached,
    not_found,
    render,
    see_other,
)
from infrastructure.http.dashboard.sessions import new_form_id, posted, signed_in, use_form_once
from infrastructure.http.dashboard.state import Dashboard
from infrastructure.webhook_views import delivery_json, webhook_json
from projections.queries.management import deliveries_of_webhook, webhooks_of_account

NOTICES = {
    "removed": "The webhook was removed: nothing more is sent to it, and its secret is erased.",
    "already-done": "That form was already submitted; a secret is never shown twice.",
}


def use_cases(dashboard: Dashboard) -> Webhooks:
    return dashboard.gateway.runtime.webhooks


def endpoint_id_of(request: Request) -> UUID:
    try:
        return UUID(request.path_params["webhook_id"])
    except ValueError:
        raise missing() from None


def missing() -> Refusal:
    return not_found(WEBHOOK)


async def webhooks_page(request: Request, dashboard: Dashboard) -> Response:
    session = await signed_in(request, dashboard)
    return await listing(request, dashboard, session.account_id)


async def listing(
    request: Request,
    dashboard: Dashboard,
    account_id: UUID,
    url: str = "",
    chosen: tuple[str, ...] = (),
    error: str | None = None,
    status: int = 200,
) -> Response:
    views = await run_in_threadpool(dashboard.reads.ask, webhooks_of_account, account_id)
    return render(
        request,
        "webhooks.html",
        status,
        title="Webhooks",
        nav="webhooks",
        webhooks=[webhook_json(view) for view in views],
        event_types=EVENT_TYPES,
        url=url,
        chosen=chosen,
        error=error,
        form_id=new_form_id(),
        notice=NOTICES.get(request.query_params.get("notice", "")),
    )


async def add_webhook(request: Request, dashboard: Dashboard) -> Response:
    session, form = await posted(request, dashboard)
    url, chosen = form.get("url", ""), tuple(form.getlist("events"))
    try:
        if not await use_form_once(dashboard, session, form):
            return see_other("/webhooks", notice="already-done")
        added = await run_in_threadpool(
            use_cases(dashboard).add, session.account_id, url, chosen, session.actor
        )
    except InvalidWebhook as error:
        return await listing(request, dashboard, session.account_id, url, chosen, f"{error}.", 422)
    response = render(
        request,
        "webhook_secret.html",
        title="Webhook added",
        nav="webhooks",
        webhook=webhook_json(added.endpoint),
        secret=added.secret,
    )
    return never_cached(response)


async def remove_webhook(request: Request, dashboard: Dashboard) -> Response:
    session, _ = await posted(request, dashboard)
    endpoint_id = endpoint_id_of(request)
    remove = use_cases(dashboard).remove
    await call(remove, endpoint_id, session.actor, session.account_id, about=WEBHOOK)
    return see_other("/webhooks", notice="removed")


async def deliveries_page(request: Request, dashboard: Dashboard) -> Response:
    session = await signed_in(request, dashboard)
    endpoint = await call(
        use_cases(dashboard).get, endpoint_id_of(request), session.account_id, about=WEBHOOK
    )
    rows = await run_in_threadpool(dashboard.reads.ask, deliveries_of_webhook, endpoint.id)
    return render(
        request,
        "webhook_deliveries.html",
        title="Deliveries",
        nav="webhooks",
        webhook=webhook_json(endpoint),
        deliveries=[delivery_json(row) for row in rows],
    )

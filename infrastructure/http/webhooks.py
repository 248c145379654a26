"""The webhook routes of the management API (API.md, Webhooks): an account's endpoints and the
log of their deliveries. The secret is in the 201 of the POST, and nowhere else ever.

An endpoint of another account is reported exactly like a missing one (404 `webhook_not_found`).
"""

from collections.abc import Callable
from typing import Any, TypeVar
from uuid import UUID

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from application.webhooks import Webhooks
from domain.errors import NotFound
from infrastructure.error_table import ANSWERED, WEBHOOK
from infrastructure.http.errors import ApiError, api_error
from infrastructure.http.jsonresponse import json_response
from infrastructure.http.management import Caller, authenticate, check_query, read_object
from infrastructure.webhook_views import delivery_json, webhook_json
from projections.queries.management import deliveries_of_webhook, webhooks_of_account

T = TypeVar("T")
CREATE_FIELDS = frozenset({"url", "events"})


def not_found() -> ApiError:
    return api_error(NotFound(), WEBHOOK)


async def call(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a worker thread; refusals become API errors (the error table)."""
    try:
        return await run_in_threadpool(function, *args)
    except ANSWERED as error:
        raise api_error(error, WEBHOOK) from None


def use_cases(caller: Caller) -> Webhooks:
    return caller.gateway.runtime.webhooks


def endpoint_id(request: Request) -> UUID:
    try:
        return UUID(request.path_params["webhook_id"])
    except ValueError:
        raise not_found() from None


async def create_webhook(request: Request) -> Response:
    caller = await authenticate(request)
    body = await read_object(caller, request, CREATE_FIELDS)
    url, events = body.get("url"), body.get("events")
    if not isinstance(url, str):
        raise ApiError(422, "invalid_webhook", "'url' must be a string.", param="url")
    if not isinstance(events, list):
        raise ApiError(
            422, "invalid_webhook", "'events' must be a list of event types.", param="events"
        )
    added = await call(use_cases(caller).add, caller.account_id, url, events, caller.actor)
    return json_response({"secret": added.secret, "data": webhook_json(added.endpoint)}, 201)


async def list_webhooks(request: Request) -> Response:
    caller = await authenticate(request)
    check_query(request, frozenset())
    reads = caller.gateway.runtime.reads.best_effort  # as before: never refused for a lag
    views = await call(reads.ask, webhooks_of_account, caller.account_id)
    return json_response({"data": [webhook_json(view) for view in views]})


async def remove_webhook(request: Request) -> Response:
    caller = await authenticate(request)
    removed = await call(
        use_cases(caller).remove, endpoint_id(request), caller.actor, caller.account_id
    )
    return json_response(webhook_json(removed))


async def webhook_deliveries(request: Request) -> Response:
    caller = await authenticate(request)
    check_query(request, frozenset())
    webhook = await call(use_cases(caller).get, endpoint_id(request), caller.account_id)
    reads = caller.gateway.runtime.reads.best_effort
    rows = await call(reads.ask, deliveries_of_webhook, webhook.id)
    return json_response({"data": [delivery_json(row) for row in rows]})


webhook_routes: list[Route] = [
    Route("/api/v1/webhooks", create_webhook, methods=["POST"], name="webhooks:create"),
    Route("/api/v1/webhooks", list_webhooks, methods=["GET"], name="webhooks:list"),
    Route(
        "/api/v1/webhooks/{webhook_id}", remove_webhook, methods=["DELETE"], name="webhooks:remove"
    ),
    Route(
        "/api/v1/webhooks/{webhook_id}/deliveries",
        webhook_deliveries,
        methods=["GET"],
        name="webhooks:deliveries",
    ),
]

"""The Starlette app factory: routes by audience, one error shape, a request id everywhere."""

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from application.clock import Clock, system_clock
from application.metering import Metering
from application.retry import is_transient
from infrastructure.catalogue import Catalogue
from infrastructure.http.apis.chat import chat_completions
from infrastructure.http.apis.embeddings import embeddings
from infrastructure.http.apis.legacy_completions import completions
from infrastructure.http.apis.messages import messages
from infrastructure.http.apis.responses import responses
from infrastructure.http.dashboard import install_dashboard
from infrastructure.http.errors import ApiError
from infrastructure.http.gateway import Gateway
from infrastructure.http.inference import list_models, this_key
from infrastructure.http.limits import BodyLimitMiddleware
from infrastructure.http.management import management_routes
from infrastructure.http.management_keys import management_key_routes
from infrastructure.http.openapi import docs, openapi_json
from infrastructure.http.secret_scanning import secret_scanning_routes
from infrastructure.http.webhooks import webhook_routes
from infrastructure.observability import Observability
from infrastructure.observability import routes as operations
from infrastructure.observability.context import note_error
from infrastructure.observability.metering import ObservedMetering
from infrastructure.runtime import Runtime
from infrastructure.upstream import build_upstream
from projections.lookup import GroupLookup

log = logging.getLogger("lowrouter.http")


class RequestIdMiddleware:
    """Give every request an id (`x-request-id` on every response, the usage record's id), and
    answer every unexpected error here, inside it: a 503 `store_unavailable` when the store is
    down or too slow (a retry will do), else a 500 — both with the request id, and without
    re-raising, so the connection stays usable for the client's next request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if started:  # mid-stream: nothing can be said any more
                raise
            response = unexpected_error(error)
            await response(scope, receive, send_with_id)


class UnexpectedErrors:
    """The innermost middleware: an error no handler took becomes its answer here (see
    unexpected_error), so the metrics and the request's log line see the status sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except Exception as error:
            if started or scope["type"] != "http":
                raise
            await unexpected_error(error)(scope, receive, send)


STORE_RETRY_AFTER = "2"  # seconds: about how long a store blip or failover takes


def unexpected_error(error: Exception) -> Response:
    if is_transient(error):
        log.warning("the store is unavailable: %s", type(error).__name__)
        note_error(503, "store_unavailable")
        return ApiError(
            503,
            "store_unavailable",
            "The gateway's database is unavailable or too slow right now; nothing was charged. "
            "Try again shortly.",
            headers={"retry-after": STORE_RETRY_AFTER},
        ).response()
    log.error("unexpected error: %s", type(error).__name__, exc_info=error)
    note_error(500, "internal_error")
    # Not "you were not charged": a failure after the upstream answered is charged what it
    # served (the settlement was already queued); the usage history says which.
    message = "Internal error; see your usage history for what this request was charged."
    return ApiError(500, "internal_error", message).response()


async def api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    note_error(error.status, error.code)
    return error.response()


INFERENCE_ROUTES = (
    "POST /api/v1/chat/completions",
    "POST /api/v1/completions",
    "POST /api/v1/responses",
    "POST /api/v1/embeddings",
    "POST /api/v1/messages",
    "GET /api/v1/models",
    "GET /api/v1/key",
)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    headers = dict(error.headers or {})  # keep e.g. the Allow header of a 405
    message = str(error.detail)
    if error.status_code == 404 and request.url.path.startswith("/api/v1/"):
        # A bare "Not Found" looks like a wrong base URL: say what exists.
        message = (
            f"No route {request.method} {request.url.path}. Inference routes: "
            f"{', '.join(INFERENCE_ROUTES)}; management routes: /api/v1/keys, /api/v1/usage, "
            "/api/v1/credits (see GET /api/v1/openapi.json)."
        )
    return ApiError(error.status_code, code, message, headers=headers).response()


async def client_gone(_request: Request, _error: Exception) -> Response:
    """The client hung up while we read its request: nothing to answer, nothing to log."""
    return Response(status_code=499)


def create_app(
    runtime: Runtime,
    catalogue: Catalogue,
    *,
    clock: Clock = system_clock,
    run_background: bool = True,
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        upstream = build_upstream(runtime.settings.upstream_timeout_seconds)
        lookups = GroupLookup(runtime.lookup, lambda: runtime.projections.recorded_failure("keys"))
        app.state.gateway = Gateway(
            runtime=runtime,
            catalogue=catalogue,
            upstream=upstream,
            lookups=lookups,
            clock=clock,
            max_body_bytes=runtime.settings.max_body_bytes,
            metering=Metering(
                runtime.spend,
                catalogue,
                ObservedMetering(),
                store_wait=runtime.settings.store_wait_seconds,
                answer_first_within=runtime.settings.answer_first_within,
            ),
        )
        runtime.start_lease()  # before the first hold: holds record their live owner
        # Built now rather than on the first request's time (it took 100-200 ms more than the
        # next ones): anyio's asyncio backend, imported on first use, and the demo upstream.
        anyio.current_time()
        upstream.prepare(catalogue.providers.values())
        if run_background and runtime.settings.background == "inline":
            runtime.start_background()
        observability.start()
        try:
            yield
        finally:
            observability.stop()
            await upstream.aclose()
            lookups.close()
            runtime.close()

    routes = [
        Route("/api/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/api/v1/completions", completions, methods=["POST"]),
        Route("/api/v1/responses", responses, methods=["POST"]),
        Route("/api/v1/embeddings", embeddings, methods=["POST"]),
        Route("/api/v1/messages", messages, methods=["POST"]),
        Route("/api/v1/models", list_models, methods=["GET"]),
        Route("/api/v1/key", this_key, methods=["GET"]),
        *management_routes,
        *management_key_routes,
        *webhook_routes,
        *secret_scanning_routes,
        Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/healthz", operations.healthz, methods=["GET"]),
        Route("/readyz", operations.readyz, methods=["GET"]),
        Route("/metrics", operations.metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            ClientDisconnect: client_gone,
        },  # anything else: RequestIdMiddleware (so even a 500 carries the request id)
    )
    app.add_middleware(UnexpectedErrors)
    # Bounds every body (and refuses duplicate Authorization) before any handler; inside the
    # request id, so even these refusals carry one.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=runtime.settings.max_body_bytes,
        timeout=runtime.settings.body_timeout_seconds,
    )
    observability = Observability.install(app, runtime.settings)  # inside the request id
    app.add_middleware(RequestIdMiddleware)
    # No trailing-slash redirects: Starlette builds their Location from the Host header, which
    # the client chooses (an open redirect to any host). A wrong path is a plain 404.
    app.router.redirect_slashes = False
    install_dashboard(app)
    return app

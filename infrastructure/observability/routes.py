"""`GET /metrics`, `GET /healthz` (liveness) and `GET /readyz` (readiness)."""

import asyncio
import hmac
from typing import Any

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from infrastructure.http.errors import ApiError
from infrastructure.http.jsonresponse import json_response
from infrastructure.observability.metrics import render
from infrastructure.persistence import projections_leader_present

CHECK_TIMEOUT = 1.5  # seconds per check: an orchestrator's probe must not hang on a dead store
READY_TIMEOUT = 5.0  # and for them all
NO_SUCH_KEY = "0" * 64  # a key hash no key has: the lookup's full path, answering None


async def metrics(request: Request) -> Response:
    hub = request.app.state.observability
    if hub.metrics is None:
        raise ApiError(404, "not_found", "Metrics are off on this gateway (LOWROUTER_METRICS).")
    expected = request.app.state.gateway.runtime.settings.metrics_token
    if expected is not None:
        presented = request.headers.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {expected}".encode()):
            raise ApiError(
                401,
                "invalid_metrics_token",
                "GET /metrics needs `Authorization: Bearer <LOWROUTER_METRICS_TOKEN>`.",
                headers={"www-authenticate": "Bearer"},
            )
    body, content_type = await run_in_threadpool(render, request.app.state.gateway.runtime)
    return Response(body, headers={"content-type": content_type})


async def healthz(request: Request) -> Response:
    """Liveness: this process serves. 503 only when it refuses every request because its key
    lookup has stopped following the log (a failed projection). No I/O: a probe must not fail
    because the database is slow (that is what /readyz says)."""
    gateway = request.app.state.gateway
    failure = gateway.lookup_trouble()  # the very condition under which it refuses
    if failure:
        # Only healthy or not: this route is unauthenticated, and the failure's text is for
        # operators (`lowrouter projections status`, /readyz, the log).
        message = "unhealthy: the key lookup has stopped following the log"
        return ApiError(503, "unhealthy", message).response()
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Readiness: the store answers, the key lookup answers and follows the log, and the
    background work (projections, reconciler, chain) runs somewhere. 503 names what is not."""
    gateway = request.app.state.gateway
    try:
        checks = await asyncio.wait_for(readiness(gateway), READY_TIMEOUT)
    except TimeoutError:
        checks = {"store": f"unreachable: no answer within {READY_TIMEOUT:g} s"}
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return json_response(body, status=200 if ready else 503)


async def readiness(gateway: Any) -> dict[str, str]:
    from infrastructure.http.gateway import durable

    runtime = gateway.runtime
    checks = {"store": "ok", "key_lookup": "ok", "background": "ok"}
    try:
        await asyncio.wait_for(run_in_threadpool(_select_one, runtime.engine), CHECK_TIMEOUT)
    except Exception as error:
        checks["store"] = f"unreachable: {_why(error)}"
    try:
        await durable(gateway.lookups.find(NO_SUCH_KEY), within=CHECK_TIMEOUT)
    except Exception as error:
        checks["key_lookup"] = f"unavailable: {_why(error)}"
    failure = gateway.lookup_trouble()
    if failure is None and checks["store"] == "ok":
        failure = await run_in_threadpool(runtime.projections.recorded_failure, "keys")
    if failure:
        checks["key_lookup"] = f"not following the log: {failure}"
    if runtime.settings.background == "inline":
        if not runtime.projections.alive:
            checks["background"] = "the projections runner of this process is not running"
    elif checks["store"] != "ok":
        checks["background"] = "unknown: the store is unreachable"
    elif not await run_in_threadpool(
        projections_leader_present, runtime.settings.database_url, runtime.engine
    ):
        checks["background"] = "no process runs the projections (the background process)"
    return checks


def _why(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT:g} s"
    return type(error).__name__


def _select_one(engine: Any) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))

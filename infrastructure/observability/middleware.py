"""The ASGI middleware: one observation per request, the overhead (and cost) headers on
inference responses, and after the response its metrics, its log line and its trace."""

import asyncio
import logging
from time import perf_counter, time_ns
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.money import format_credits
from infrastructure.observability.context import CURRENT, INFERENCE_APIS, Observation, api_of
from infrastructure.observability.logs import RequestLog

if TYPE_CHECKING:
    from infrastructure.observability import Observability

log = logging.getLogger("lowrouter.observability")

NOT_TRACED = ("/healthz", "/readyz", "/metrics")
OVERHEAD_HEADER = b"x-lowrouter-overhead-ms"
COST_HEADER = b"x-lowrouter-cost"


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, hub: "Observability") -> None:
        self.app = app
        self.hub = hub
        settings = hub.settings
        self.request_log = RequestLog(settings.log_format) if settings.access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        client = scope.get("client")
        observation = Observation(
            request_id=scope.get("state", {}).get("request_id"),
            method=scope["method"],
            path=path,
            api=api_of(path),
            started=perf_counter(),
            wall_ns=time_ns(),
            client_ip=client[0] if client else None,
            inference=path in INFERENCE_APIS,
        )
        token = CURRENT.set(observation)

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                observation.status = message["status"]
                if observation.inference:
                    message["headers"] = with_inference_headers(observation, message)
                await send(message)
                return
            handing = perf_counter()
            await send(message)
            observation.client_seconds += perf_counter() - handing

        try:
            await self.app(scope, receive, send_observed)
        except BaseException as error:
            if observation.status == 0:  # nothing was answered
                observation.status = 499 if isinstance(error, asyncio.CancelledError) else 500
            raise
        finally:
            CURRENT.reset(token)
            self.finish(observation, perf_counter(), scope)

    def finish(self, observation: Observation, ended: float, scope: Scope) -> None:
        hub = self.hub
        try:
            if hub.metrics is not None:
                hub.metrics.observe_request(observation, ended)
            if self.request_log is not None:
                self.request_log.write(log_fields(observation, ended))
            tracing = hub.tracing
            if tracing is not None and traced(observation.path):
                tracing.emit(observation, ended, traceparent(scope))
        except Exception:  # observing must never break serving
            log.exception("could not record the request's metrics, log line or trace")


def traced(path: str) -> bool:
    """Not the probes and scrapes (noise in a trace store), nor the demo upstream's own calls
    (the demo provider is served by the gateway itself)."""
    return path not in NOT_TRACED and not path.startswith("/demo/")


def with_inference_headers(observation: Observation, message: Message) -> list[Any]:
    headers = list(message.get("headers", []))
    overhead_ms = observation.overhead_seconds(perf_counter()) * 1e3
    headers.append((OVERHEAD_HEADER, f"{overhead_ms:.3f}".encode()))
    streamed = any(
        name == b"content-type" and value.startswith(b"text/event-stream")
        for name, value in headers
    )
    if not streamed:
        headers.append((COST_HEADER, format_credits(observation.cost or 0).encode()))
    return headers


def log_fields(observation: Observation, ended: float) -> dict[str, Any]:
    """The contract's request line fields (and a few more); the key only in display form."""
    return {
        "request_id": observation.request_id,
        "method": observation.method,
        "path": observation.path,
        "status": observation.status,
        "key": observation.key_display,
        "account_id": observation.account_id,
        "model": observation.model,
        "provider": observation.provider,
        "cost": None if observation.cost is None else format_credits(observation.cost),
        "latency_ms": round((ended - observation.started) * 1e3, 3),
        "overhead_ms": round(observation.overhead_seconds(ended) * 1e3, 3),
        "client_ip": observation.client_ip,
        "api": observation.api,
        "outcome": observation.outcome,
        "refusal": observation.refusal,
        "streamed": observation.streamed,
        "prompt_tokens": observation.prompt_tokens,
        "completion_tokens": observation.completion_tokens,
    }


def traceparent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"traceparent":
            return str(value.decode("latin-1"))
    return None

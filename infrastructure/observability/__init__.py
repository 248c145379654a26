"""Observability: Prometheus metrics, structured logs, OpenTelemetry traces, the gateway's own
overhead on every inference response, and health and readiness for load balancers.

    context     what one request did, noted by the hot path's hooks (no I/O)
    upstream    the time spent waiting on upstreams (so overhead = total - that)
    middleware  per request: headers, then metrics, the request log line and the trace
    metrics     prometheus-client, multiprocess across workers and the background process
    logs        LOWROUTER_LOG_FORMAT=text|json for every process and logger
    tracing     OTLP/HTTP spans, only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    routes      /metrics, /healthz, /readyz
"""

import logging
import os
from dataclasses import dataclass, field

from starlette.applications import Starlette

from infrastructure.observability.metrics import Metrics, process_metrics
from infrastructure.observability.middleware import ObservabilityMiddleware
from infrastructure.observability.tracing import Tracing
from infrastructure.settings import Settings

log = logging.getLogger("lowrouter.serve")


@dataclass
class Observability:
    """One app's observability: what it records, and the tracer while the app runs."""

    settings: Settings
    metrics: Metrics | None = None
    tracing: Tracing | None = field(default=None, init=False)

    @classmethod
    def install(cls, app: Starlette, settings: Settings) -> "Observability":
        hub = cls(settings, process_metrics() if settings.metrics else None)
        app.state.observability = hub
        app.add_middleware(ObservabilityMiddleware, hub=hub)
        return hub

    def start(self) -> None:
        """At the app's start-up: the exporter (and its thread) only if traces go somewhere."""
        endpoint = self.settings.otlp_traces_endpoint
        if endpoint and self.tracing is None:
            self.tracing = Tracing(endpoint)
        log.info("lowrouter: gateway process %d ready", os.getpid(), extra={"event": "ready"})

    def stop(self) -> None:
        if self.tracing is not None:
            tracing, self.tracing = self.tracing, None
            tracing.shutdown()

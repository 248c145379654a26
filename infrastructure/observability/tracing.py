"""OpenTelemetry traces over OTLP/HTTP, only when an endpoint is configured
(`OTEL_EXPORTER_OTLP_ENDPOINT`, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).

Unset, nothing of the SDK is imported, no exporter thread starts, and a request costs nothing
more than the timestamps the middleware takes anyway. Set, each request gets one server span
with the GenAI semantic-convention attributes and child spans for the reservation, each
upstream call and the settlement, built after the response from what the request noted, and
exported in batches by the SDK's own thread (BatchSpanProcessor), off the event loop.
"""

import os
from collections.abc import Mapping
from typing import Any

from domain.money import MICRO
from infrastructure.observability.context import Observation, Span

# gen_ai.operation.name by lowrouter API
OPERATIONS = {
    "chat.completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


class Tracing:
    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        service = os.environ.get("OTEL_SERVICE_NAME") or "lowrouter"
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("lowrouter")
        self.propagator = TraceContextTextMapPropagator()

    def emit(self, observation: Observation, ended: float, traceparent: str | None) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

        parent = self.propagator.extract({"traceparent": traceparent}) if traceparent else None
        server = self.tracer.start_span(
            f"{observation.method} {observation.path}",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=observation.wall_ns,
            attributes=server_attributes(observation, ended),
        )
        if observation.status >= 500:
            server.set_status(Status(StatusCode.ERROR))
        inside = set_span_in_context(server)
        steps: list[tuple[str, Span | None]] = [("lowrouter.reservation", observation.reservation)]
        steps += [("lowrouter.upstream", call) for call in observation.upstream_calls]
        steps.append(("lowrouter.settlement", observation.settlement))
        for name, step in steps:
            if step is None:
                continue
            child = self.tracer.start_span(
                name,
                context=inside,
                kind=SpanKind.CLIENT if name == "lowrouter.upstream" else SpanKind.INTERNAL,
                start_time=observation.wall(step.started),
                attributes=step.attributes,
            )
            if "error.type" in step.attributes:
                child.set_status(Status(StatusCode.ERROR))
            child.end(end_time=observation.wall(step.ended if step.ended is not None else ended))
        server.end(end_time=observation.wall(ended))

    def shutdown(self) -> None:
        """Export what is queued, then stop the exporter thread."""
        self.provider.shutdown()


def server_attributes(observation: Observation, ended: float) -> Mapping[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": observation.method,
        "url.path": observation.path,
        "http.response.status_code": observation.status,
        "lowrouter.api": observation.api,
    }
    optional: dict[str, Any] = {
        "lowrouter.request_id": observation.request_id,
        "client.address": observation.client_ip,
        "lowrouter.key": observation.key_display,
        "lowrouter.account_id": observation.account_id,
        "lowrouter.refusal": observation.refusal,
    }
    if observation.inference:
        attributes["lowrouter.overhead_ms"] = round(observation.overhead_seconds(ended) * 1e3, 3)
        optional.update(
            {
                "gen_ai.operation.name": OPERATIONS.get(observation.api),
                "gen_ai.request.model": observation.requested_model,
                "gen_ai.response.model": observation.model,
                "gen_ai.system": observation.provider,
                "gen_ai.usage.input_tokens": observation.prompt_tokens,
                "gen_ai.usage.output_tokens": observation.completion_tokens,
                "lowrouter.outcome": observation.outcome,
                "lowrouter.streamed": observation.streamed if observation.outcome else None,
                "lowrouter.cost": None if observation.cost is None else observation.cost / MICRO,
            }
        )
    attributes.update({name: value for name, value in optional.items() if value is not None})
    return attributes

"""OpenTelemetry: with an OTLP/HTTP endpoint configured, a test-local receiver gets one server span
per request, with the GenAI attributes and child spans for the reservation, the upstream call
and the settlement; with none configured, nothing is exported and no exporter thread starts."""

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from domain.money import MICRO
from domain.tokens import display_of
from tests.fake_upstream import FakeUpstream, run_fake_upstream
from tests.observability.serving import gateway_in_a_thread, issue_key

HELLO = [{"role": "user", "content": "Hello there"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"


@dataclass
class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    url: str
    spans: list[SpanProto] = field(default_factory=list)
    posts: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    received = Receiver(f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            assert self.path == "/v1/traces"
            export = ExportTraceServiceRequest.FromString(body)
            received.posts += 1
            for resource in export.resource_spans:
                for scope in resource.scope_spans:
                    received.spans.extend(scope.spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as fake:
        yield fake


def attributes(span: SpanProto) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in span.attributes:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


def test_one_server_span_per_request_with_genai_attributes_and_child_spans(
    tmp_path: Path, upstream: FakeUpstream, receiver: Receiver
) -> None:
    app, server = gateway_in_a_thread(
        tmp_path, upstream, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    )
    url = server.start()
    runtime = app.state.gateway.runtime
    try:
        _account, token = issue_key(runtime, "traced", 100 * MICRO)
        api = url + "/api/v1/chat/completions"
        auth = {"Authorization": f"Bearer {token}"}
        traced = {"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01", **auth}
        answer = httpx.post(api, headers=traced, json={"model": "fake/ok", "messages": HELLO})
        body = {"model": "fake/ok", "messages": HELLO, "stream": True}
        with httpx.stream("POST", api, headers=auth, json=body) as streamed:
            streamed.read()
        failed = httpx.post(api, headers=auth, json={"model": "fake/error500", "messages": HELLO})
        refused = httpx.post(
            api, headers={"Authorization": "Bearer lr-sk-nope"}, json={"model": "fake/ok"}
        )
        assert httpx.get(url + "/healthz").status_code == 200  # probes are not traced
    finally:
        server.stop()  # the app's shutdown exports what is queued
    assert [answer.status_code, streamed.status_code] == [200, 200]
    assert [failed.status_code, refused.status_code] == [502, 401]

    servers = {
        attributes(span)["lowrouter.request_id"]: span
        for span in receiver.spans
        if span.kind == SpanProto.SPAN_KIND_SERVER
    }
    responses = [answer, streamed, failed, refused]
    assert set(servers) == {r.headers["x-request-id"] for r in responses}
    assert len([s for s in receiver.spans if s.kind == SpanProto.SPAN_KIND_SERVER]) == 4

    def children(span: SpanProto) -> list[str]:
        return sorted(
            child.name
            for child in receiver.spans
            if child.parent_span_id == span.span_id and child.trace_id == span.trace_id
        )

    steps = ["lowrouter.reservation", "lowrouter.settlement", "lowrouter.upstream"]
    usage = answer.json()["usage"]
    ok = servers[answer.headers["x-request-id"]]
    seen = attributes(ok)
    assert seen["gen_ai.request.model"] == "fake/ok"
    assert seen["gen_ai.system"] == "fake-us"
    assert seen["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert seen["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert seen["lowrouter.cost"] == pytest.approx(float(usage["cost"]))
    assert seen["http.response.status_code"] == 200
    assert seen["lowrouter.key"] == display_of(token)
    assert children(ok) == steps
    assert ok.trace_id.hex() == TRACE_ID and ok.parent_span_id.hex() == PARENT_SPAN_ID
    assert ok.start_time_unix_nano < ok.end_time_unix_nano

    stream_span = servers[streamed.headers["x-request-id"]]
    assert attributes(stream_span)["lowrouter.streamed"] is True
    assert attributes(stream_span)["gen_ai.usage.output_tokens"] > 0
    assert children(stream_span) == steps

    failure = servers[failed.headers["x-request-id"]]
    assert children(failure) == steps
    upstream_call = next(
        s for s in receiver.spans if s.parent_span_id == failure.span_id and "upstream" in s.name
    )
    assert attributes(upstream_call)["error.type"] == "status 500"
    assert attributes(failure)["lowrouter.cost"] == 0

    refusal = servers[refused.headers["x-request-id"]]
    assert attributes(refusal)["lowrouter.refusal"] == "invalid_api_key"
    assert children(refusal) == []  # refused before any reservation
    for span in receiver.spans:
        assert token not in str(attributes(span))


def test_without_an_endpoint_nothing_is_exported_and_no_exporter_thread_starts(
    tmp_path: Path, upstream: FakeUpstream, receiver: Receiver
) -> None:
    before = set(threading.enumerate())
    app, server = gateway_in_a_thread(tmp_path, upstream, {})
    url = server.start()
    try:
        _account, token = issue_key(app.state.gateway.runtime, "untraced", 100 * MICRO)
        answer = httpx.post(
            url + "/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {token}"},
            json={"model": "fake/ok", "messages": HELLO},
        )
        assert answer.status_code == 200
        started = {t.name for t in set(threading.enumerate()) - before}
        assert app.state.observability.tracing is None
    finally:
        server.stop()
    assert not [name for name in started if name.startswith("OtelBatch")], started
    assert receiver.posts == 0 and receiver.spans == []

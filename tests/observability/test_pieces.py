"""The observability pieces on their own: the Grafana dashboard names only metrics that exist,
log lines never carry a token, the API label set is bounded, and with no request being
observed every hook does nothing."""

import json
import logging
import os
import re
from concurrent.futures import Future
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from domain.tokens import TokenKind, display_of, generate_token
from infrastructure.observability import context
from infrastructure.observability.context import api_of, track_settlement
from infrastructure.observability.logs import JsonFormatter, RequestLog, TextFormatter, redact
from infrastructure.observability.metrics import Metrics, StoreCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-lowrouter.json"


def exposed_names() -> set[str]:
    """Every series name lowrouter exposes: its recorded metrics and the store's gauges."""
    metrics = Metrics()
    assert metrics.registry is not None  # in-memory here: no PROMETHEUS_MULTIPROC_DIR
    names = {sample.name for family in metrics.registry.collect() for sample in family.samples}
    for metric in (metrics.requests, metrics.refusals, metrics.charged, metrics.upstream_errors):
        names.add(metric._name + "_total")
    for histogram in (metrics.duration, metrics.overhead):
        names |= {histogram._name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names | {
        "lowrouter_projection_lag_events",
        "lowrouter_open_holds",
        "lowrouter_held_credits",
    }


def test_the_dashboard_queries_only_metrics_lowrouter_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"lowrouter_\w+", expr)}
    assert used, "the dashboard queries nothing"
    assert used <= exposed_names(), used - exposed_names()
    assert "lowrouter_overhead_seconds_bucket" in used
    assert "lowrouter_projection_lag_events" in used
    for expr in expressions:  # no per-key grouping (cardinality), as the metrics have none
        assert "key" not in re.findall(r"by \(([^)]*)\)", expr)


def test_the_store_collector_describes_nothing_so_registration_costs_no_query() -> None:
    assert StoreCollector(runtime=None).describe() == []


@given(st.sampled_from(list(TokenKind)), st.text(max_size=40))
def test_no_formatted_line_contains_a_token(kind: TokenKind, around: str) -> None:
    token = generate_token(kind).value
    record = logging.LogRecord(
        "lowrouter.test", logging.WARNING, __file__, 1, "saw %s in %s", (token, around), None
    )
    record.header = f"Bearer {token}"  # an `extra=` field
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert token not in line and token[6:38] not in line
        assert display_of(token) in line
    json.loads(JsonFormatter().format(record))


def test_the_request_line_is_one_json_object_and_redacts_a_token_in_the_path(
    tmp_path: Path,
) -> None:
    token = generate_token(TokenKind.INFERENCE).value
    target = tmp_path / "lines"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    try:
        fields = {"request_id": "req_1", "method": "GET", "path": f"/x/{token}", "status": 404}
        RequestLog("json", fd).write(dict(fields))
        text_fields = {
            **fields,
            "latency_ms": 1.0,
            "overhead_ms": 0.5,
            "key": None,
            "model": None,
            "provider": None,
            "cost": None,
            "client_ip": "127.0.0.1",
        }
        RequestLog("text", fd).write(text_fields)
    finally:
        os.close(fd)
    json_line, text_line = target.read_text().splitlines()
    line = json.loads(json_line)
    assert line["event"] == "request" and line["status"] == 404
    assert line["path"] == f"/x/{display_of(token)}"
    assert token not in json_line + text_line and "req_1" in text_line


@given(st.text(max_size=60))
def test_the_api_label_comes_from_a_small_fixed_set(path: str) -> None:
    assert api_of("/" + path) in {
        "chat.completions", "completions", "responses", "embeddings", "messages", "models",
        "key", "management", "dashboard", "health", "metrics", "demo", "docs", "other",
    }  # fmt: skip


def test_outside_a_request_the_hooks_note_nothing_but_charges_still_count() -> None:
    charged: list[tuple[str, int]] = []
    previous, context.charged_hook = context.charged_hook, lambda m, c: charged.append((m, c))
    try:
        assert context.current() is None
        context.note_key("lr-sk-AbCd…wXyZ", "account")
        context.note_error(402, "insufficient_credits")
        future: Future[int | None] = Future()
        returned = track_settlement(
            future,
            model="m",
            provider=None,
            prompt_tokens=1,
            completion_tokens=2,
            outcome="ok",
            streamed=False,
        )
        assert returned is future
        future.set_result(7)
        assert charged == [("m", 7)]
        closed: Future[int | None] = Future()
        track_settlement(
            closed, model="m", provider=None, prompt_tokens=0, completion_tokens=0,
            outcome="ok", streamed=False,
        )  # fmt: skip
        closed.set_result(None)  # the hold was already closed: nothing charged now
        assert charged == [("m", 7)]
    finally:
        context.charged_hook = previous


def test_redact_leaves_text_without_tokens_alone() -> None:
    assert redact("lr-sk-AbCd…wXyZ and lr-nothing") == "lr-sk-AbCd…wXyZ and lr-nothing"

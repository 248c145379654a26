"""The overhead is lowrouter's own time: an upstream that takes a second to answer (or a stream
whose upstream pauses between chunks) adds that to the latency, not to the overhead."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.money import MICRO
from infrastructure.observability import middleware
from infrastructure.observability.context import Observation
from tests.fake_upstream import FakeUpstream, run_fake_upstream
from tests.observability.serving import gateway_in_a_thread, issue_key

HELLO = [{"role": "user", "content": "Hello there"}]
UPSTREAM_SECONDS = 1.0
CHUNK_PAUSE = 0.25


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream(slow_seconds=UPSTREAM_SECONDS) as fake:
        yield fake


def test_time_waiting_on_the_upstream_is_not_overhead(
    tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished: dict[str, tuple[Observation, float]] = {}
    original = middleware.ObservabilityMiddleware.finish

    def keep(self: Any, observation: Observation, ended: float, scope: Any) -> None:
        finished[str(observation.request_id)] = (observation, ended)
        original(self, observation, ended, scope)

    monkeypatch.setattr(middleware.ObservabilityMiddleware, "finish", keep)
    app, server = gateway_in_a_thread(tmp_path, upstream, {})
    url = server.start()
    try:
        _account, token = issue_key(app.state.gateway.runtime, "patient", 100 * MICRO)
        api = url + "/api/v1/chat/completions"
        auth = {"Authorization": f"Bearer {token}"}
        began = time.monotonic()
        slow = httpx.post(
            api, headers=auth, json={"model": "fake/slow", "messages": HELLO}, timeout=30
        )
        took = time.monotonic() - began
        upstream.chunk_delay = CHUNK_PAUSE  # a stream that pauses between its chunks
        body = {"model": "fake/ok", "messages": HELLO, "stream": True}
        with httpx.stream("POST", api, headers=auth, json=body, timeout=30) as streamed:
            streamed.read()
    finally:
        upstream.chunk_delay = 0.0
        server.stop()

    assert slow.status_code == 200 and took >= UPSTREAM_SECONDS
    overhead_ms = float(slow.headers["x-lowrouter-overhead-ms"])
    assert 0 < overhead_ms < (took - 0.9 * UPSTREAM_SECONDS) * 1000
    observation, ended = finished[slow.headers["x-request-id"]]
    assert observation.upstream_seconds >= 0.95 * UPSTREAM_SECONDS
    assert observation.overhead_seconds(ended) < ended - observation.started - 0.9

    observation, ended = finished[streamed.headers["x-request-id"]]
    total = ended - observation.started
    assert total >= 2 * CHUNK_PAUSE  # the pauses are in the latency …
    assert observation.upstream_seconds >= 2 * CHUNK_PAUSE * 0.95
    assert observation.overhead_seconds(ended) < total - 2 * CHUNK_PAUSE * 0.9  # … not here

"""lowrouter's upstream client (aiohttp directly): what each upstream failure becomes — a timeout
wherever it happens, unreachable before the answer's head, broken off after it — and a body read
whole or as it arrives, against the fake upstream."""

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from domain.routing import Provider
from infrastructure.upstream import (
    Upstream,
    UpstreamBrokeOff,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    build_upstream,
)
from tests.fake_upstream import FakeUpstream, run_fake_upstream
from tests.support.processes import free_port

T = TypeVar("T")
USER = [{"role": "user", "content": "hello big world"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with run_fake_upstream(slow_seconds=2.0) as running:
        yield running


def provider(base_url: str) -> Provider:
    return Provider("fake", base_url, "", "local")


def body(model: str, stream: bool = False) -> bytes:
    return json.dumps({"model": model, "messages": USER, "stream": stream}).encode()


def with_upstream(timeout: float, use: Callable[[Upstream], Awaitable[T]]) -> T:
    async def run() -> T:
        upstream = build_upstream(timeout)
        try:
            return await use(upstream)
        finally:
            await upstream.aclose()

    return asyncio.run(run())


async def read_stream(upstream: Upstream, target: Provider, model: str) -> list[bytes]:
    response = await upstream.send(target, body(model, stream=True))
    received = []
    try:
        async for chunk in response.aiter_bytes():
            received.append(chunk)
    finally:
        await response.aclose()
    return received


def test_a_completion_is_read_whole_and_a_stream_as_it_arrives(fake: FakeUpstream) -> None:
    target = provider(fake.base_url)

    async def use(upstream: Upstream) -> tuple[Any, bytes]:
        response = await upstream.send(target, body("fake-ok"))
        assert response.status_code == 200
        answer = json.loads(await response.aread())
        await response.aclose()
        streamed = b"".join(await read_stream(upstream, target, "fake-ok"))
        return answer, streamed

    answer, streamed = with_upstream(5, use)
    assert answer["object"] == "chat.completion" and answer["usage"]["total_tokens"] > 0
    assert streamed.rstrip().endswith(b"data: [DONE]")


def test_an_upstream_error_status_is_an_answer_not_an_exception(fake: FakeUpstream) -> None:
    async def use(upstream: Upstream) -> tuple[int, bytes]:
        response = await upstream.send(provider(fake.base_url), body("fake-error500"))
        content = await response.aread()
        await response.aclose()
        return response.status_code, content

    status, content = with_upstream(5, use)
    assert status == 500 and b"server_error" in content


def test_no_answer_within_the_timeout_is_a_timeout(fake: FakeUpstream) -> None:
    async def use(upstream: Upstream) -> None:
        await upstream.send(provider(fake.base_url), body("fake-slow"))

    with pytest.raises(UpstreamTimeout):
        with_upstream(0.2, use)


def test_a_stream_that_stalls_times_out_between_chunks(fake: FakeUpstream) -> None:
    async def use(upstream: Upstream) -> list[bytes]:
        return await read_stream(upstream, provider(fake.base_url), "fake-stall")

    with pytest.raises(UpstreamTimeout):
        with_upstream(0.3, use)


def test_a_refused_connection_is_unreachable() -> None:
    port = free_port()  # a port nothing listens on

    async def use(upstream: Upstream) -> None:
        await upstream.send(provider(f"http://127.0.0.1:{port}/v1"), body("fake-ok"))

    with pytest.raises(UpstreamUnreachable) as raised:
        with_upstream(5, use)
    assert "127.0.0.1" not in str(raised.value)  # the class name only, never the URL


def test_a_body_cut_short_is_broken_off_whole_or_streamed(fake: FakeUpstream) -> None:
    target = provider(fake.base_url)

    async def whole(upstream: Upstream) -> bytes:
        response = await upstream.send(target, body("fake-hangup"))
        try:
            return await response.aread()
        finally:
            await response.aclose()

    async def streamed(upstream: Upstream) -> list[bytes]:
        return await read_stream(upstream, target, "fake-hangup")

    for use in (whole, streamed):
        with pytest.raises(UpstreamBrokeOff):
            with_upstream(5, use)  # type: ignore[arg-type]
    assert issubclass(UpstreamBrokeOff, UpstreamError)


def test_a_connection_is_reused_after_a_body_read_to_its_end_and_not_after_an_abandoned_one(
    fake: FakeUpstream,
) -> None:
    target = provider(fake.base_url)

    async def use(upstream: Upstream) -> tuple[int, int]:
        for _ in range(3):
            await read_stream(upstream, target, "fake-ok")
        connector = upstream.session.connector
        assert connector is not None
        reused = sum(len(v) for v in connector._conns.values())  # idle pooled connections
        response = await upstream.send(target, body("fake-stall", stream=True))
        async for _chunk in response.aiter_bytes():
            break  # the client went away mid-stream
        await response.aclose()
        return reused, sum(len(v) for v in connector._conns.values())

    reused, after_abandon = with_upstream(5, use)
    assert reused == 1  # three streams, one connection
    assert after_abandon == 0  # the stalled stream's connection was closed, not pooled

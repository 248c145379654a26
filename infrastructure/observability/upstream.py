"""Timing the upstream: how long a request waited on providers, so overhead = total - that.

`observed_send` replaces `transport.handle_async_request(request)`: it times the wait for the
response's headers and wraps the response's body stream so every read of it is timed too (a
streamed completion waits on the upstream between chunks; a non-streamed one while reading
the body). Failures are counted per provider and logged with the request's id.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from time import perf_counter

import httpx

from infrastructure.observability.context import CURRENT, Observation, Span

log = logging.getLogger("lowrouter.upstream")


async def observed_send(
    transport: httpx.AsyncBaseTransport, request: httpx.Request, provider: str
) -> httpx.Response:
    observation = CURRENT.get()
    if observation is None:
        return await transport.handle_async_request(request)
    span = Span(perf_counter(), attributes={"lowrouter.provider": provider})
    observation.upstream_calls.append(span)
    try:
        response = await transport.handle_async_request(request)
    except BaseException as error:
        span.ended = perf_counter()
        observation.upstream_seconds += span.ended - span.started
        if not isinstance(error, asyncio.CancelledError):
            upstream_failed(observation, span, provider, type(error).__name__)
        raise
    waited = perf_counter()
    observation.upstream_seconds += waited - span.started
    span.attributes["http.response.status_code"] = response.status_code
    if response.status_code >= 500:
        upstream_failed(observation, span, provider, f"status {response.status_code}")
    assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport's answer
    response.stream = TimedStream(response.stream, observation, span, provider)
    return response


def upstream_failed(observation: Observation, span: Span, provider: str, error: str) -> None:
    from infrastructure.observability.metrics import count_upstream_error

    span.attributes["error.type"] = error
    count_upstream_error(provider)
    log.warning(
        "upstream %s failed: %s",
        provider,
        error,
        extra={"event": "upstream_error", "provider": provider, "error": error},
    )


class TimedStream(httpx.AsyncByteStream):
    """The response body, its reads counted as time waiting on the upstream."""

    def __init__(
        self, inner: httpx.AsyncByteStream, observation: Observation, span: Span, provider: str
    ) -> None:
        self._inner = inner
        self._observation = observation
        self._span = span
        self._provider = provider

    async def __aiter__(self) -> AsyncIterator[bytes]:
        observation = self._observation
        chunks = self._inner.__aiter__()
        while True:
            asked = perf_counter()
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                self._span.ended = now = perf_counter()
                observation.upstream_seconds += now - asked
                return
            except BaseException as error:
                self._span.ended = now = perf_counter()
                observation.upstream_seconds += now - asked
                if isinstance(error, httpx.HTTPError):
                    upstream_failed(observation, self._span, self._provider, type(error).__name__)
                raise
            observation.upstream_seconds += perf_counter() - asked
            yield chunk

    async def aclose(self) -> None:
        if self._span.ended is None:
            self._span.ended = perf_counter()
        await self._inner.aclose()

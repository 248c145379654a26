"""Timing the upstream: how long a request waited on providers, so overhead = total - that.

`observed_send` awaits the upstream's answer: it times the wait for the response's head and
gives the response a BodyTimer so every read of its body is timed too (a streamed completion
waits on the upstream between chunks; a non-streamed one while reading the body). Failures are
counted per provider and logged with the request's id.
"""

import asyncio
import logging
from collections.abc import Awaitable
from time import perf_counter
from typing import Protocol, TypeVar

from infrastructure.observability.context import CURRENT, Observation, Span

log = logging.getLogger("lowrouter.upstream")


class Answer(Protocol):
    status_code: int
    timer: "BodyTimer | None"


A = TypeVar("A", bound=Answer)


async def observed_send(sending: Awaitable[A], provider: str) -> A:
    """Await the upstream's answer (its head), timed; its body's reads are timed by the
    BodyTimer it is given."""
    observation = CURRENT.get()
    if observation is None:
        return await sending
    span = Span(perf_counter(), attributes={"lowrouter.provider": provider})
    observation.upstream_calls.append(span)
    try:
        response = await sending
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
    response.timer = BodyTimer(observation, span, provider)
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


class BodyTimer:
    """The reads of an answer's body, counted as time waiting on the upstream. The response
    calls it around each read (`asked` is when the read began)."""

    __slots__ = ("_observation", "_provider", "_span")

    def __init__(self, observation: Observation, span: Span, provider: str) -> None:
        self._observation = observation
        self._span = span
        self._provider = provider

    def read(self, asked: float) -> None:
        self._observation.upstream_seconds += perf_counter() - asked

    def ended(self, asked: float) -> None:
        self._span.ended = now = perf_counter()
        self._observation.upstream_seconds += now - asked

    def failed(self, asked: float, error: str) -> None:
        self.ended(asked)
        upstream_failed(self._observation, self._span, self._provider, error)

    def closed(self) -> None:
        if self._span.ended is None:
            self._span.ended = perf_counter()

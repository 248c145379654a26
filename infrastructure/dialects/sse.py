"""Server-sent events, both ways: reading an upstream's `data:` payloads as they arrive, and
writing events for a client (OpenAI chat style `data:` only, or typed `event:` + `data:` as the
Responses and Anthropic Messages streams are)."""

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson


class Body(Protocol):
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


async def sse_data(response: Body) -> AsyncIterator[list[bytes]]:
    """The `data:` payloads of a server-sent event stream, as they arrive: one list per network
    read, ending at `[DONE]` or at the end of the stream. Bytes all the way (no text decoding,
    splitting in C): this runs for every chunk of every stream."""
    parser = SseParser()
    async for received in response.aiter_bytes():
        payloads = parser.feed(received)
        if payloads:
            yield payloads
        if parser.done:
            return
    payloads = parser.end()
    if payloads:
        yield payloads


class SseParser:
    """Incremental: feed it bytes split anywhere, get the complete `data:` payloads so far."""

    def __init__(self) -> None:
        self._pending = b""
        self.done = False  # `[DONE]` was seen: nothing after it counts

    def feed(self, received: bytes) -> list[bytes]:
        if self.done:
            return []
        if b"\r" in received:  # CRLF or CR line ends (SSE allows both): make them LF
            received = received.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._pending = (self._pending + received).split(b"\n")
        return self._payloads(lines)

    def end(self) -> list[bytes]:
        pending, self._pending = self._pending, b""
        return [] if self.done else self._payloads([pending])

    def _payloads(self, lines: list[bytes]) -> list[bytes]:
        payloads: list[bytes] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                return payloads
            payloads.append(payload)
        return payloads


def data_event(payload: Mapping[str, Any]) -> bytes:
    """An OpenAI chat/completions stream event: `data: {...}`."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def typed_event(payload: Mapping[str, Any]) -> bytes:
    """A typed stream event (Responses, Anthropic Messages): `event: TYPE` then `data: {...}`."""
    name = str(payload.get("type", "message"))
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"

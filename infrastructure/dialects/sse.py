"""Server-sent events, both ways: reading an upstream's `data:` payloads as they arrive, and
writing events for a client (OpenAI chat style `data:` only, or typed `event:` + `data:` as the
Responses and Anthropic Messages streams are)."""

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import orjson

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one upstream line; a bigger one is an upstream error


class Body(Protocol):
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


class EventTooLarge(ValueError):
    """An upstream line longer than the parser's limit (a broken or hostile upstream).
    `payloads` are the complete events that arrived before it, in the same read."""

    def __init__(self, message: str, payloads: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.payloads = payloads or []


async def sse_data(response: Body, parser: "SseParser | None" = None) -> AsyncIterator[list[bytes]]:
    """The `data:` payloads of a server-sent event stream, as they arrive: one list per network
    read, ending at `[DONE]` or at the end of the stream (`parser.done` tells which). Bytes all
    the way (no text decoding, splitting in C): this runs for every chunk of every stream."""
    parser = parser or SseParser()
    async for received in response.aiter_bytes():
        try:
            payloads = parser.feed(received)
        except EventTooLarge as error:
            if error.payloads:  # what was complete before the oversized line still counts
                yield error.payloads
            raise
        if payloads:
            yield payloads
        if parser.done:
            return
    payloads = parser.end()
    if payloads:
        yield payloads


class SseParser:
    """Incremental: feed it bytes split anywhere, get the complete `data:` payloads so far.

    Linear in what it is fed: an unfinished line is kept as a list of pieces and joined once,
    when its end arrives (joining at every read made a long line quadratic), and a line longer
    than `max_event_bytes` raises EventTooLarge instead of growing without bound."""

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._pieces: list[bytes] = []  # the unfinished last line, in pieces
        self._pending_size = 0
        self.max_event_bytes = MAX_EVENT_BYTES if max_event_bytes is None else max_event_bytes
        self.done = False  # `[DONE]` was seen: nothing after it counts

    def feed(self, received: bytes) -> list[bytes]:
        if self.done:
            return []
        if b"\r" in received:  # CRLF or CR line ends (SSE allows both): make them LF
            received = received.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in received:
            self._keep(received)
            return []
        lines = received.split(b"\n")
        if self._pieces:
            lines[0] = b"".join((*self._pieces, lines[0]))
            self._pieces, self._pending_size = [], 0
        self._check(len(lines[0]))
        rest = lines.pop()
        payloads = self._payloads(lines)
        if rest and not self.done:
            try:
                self._keep(rest)
            except EventTooLarge as error:
                error.payloads = payloads
                raise
        return payloads

    def end(self) -> list[bytes]:
        pending = b"".join(self._pieces)
        self._pieces, self._pending_size = [], 0
        return [] if self.done else self._payloads([pending])

    def _keep(self, piece: bytes) -> None:
        self._pending_size += len(piece)
        self._check(self._pending_size)
        self._pieces.append(piece)

    def _check(self, size: int) -> None:
        if size > self.max_event_bytes:
            raise EventTooLarge(
                f"an upstream stream line of more than {self.max_event_bytes} bytes"
            )

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
